"""fMRLRec: frozen item features -> trainable projection -> nested LRU blocks -> per-size tied scores.

Every layer is nested, so the size-s model is exactly the first s dims of everything. The fast path
computes only the positions a batch needs (see model/packing.py) and builds the logits of all sizes
as a running sum over chunks: logits of size s_k = logits of size s_{k-1} + chunk k's contribution.
While training on frozen features, the wide trailing chunks of the item table are never projected:
their contribution is scored as (h_k W_k) F^T (model/nested_loss.py), cheaper when few positions
carry labels. `model/reference.py` computes the same thing the plain way and is the test oracle.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from model.fast_path import AutocastCopy, FastPathSettings
from model.fp32_matmul import fast_fp32_matmul, frozen_input_linear
from model.lru import LRULayer
from model.mrl import MRLLayerNorm, MRLLinear, chunk_widths
from model.nested_loss import MASKED_LOGIT, nested_cross_entropy, projected_chunk_count
from model.packing import PackedBatch, pack_batch, pack_last_position

LRU_INPUT_ROWS = 4096  # rows of the item table per slice in `first_lru_inputs`


class FeedForward(nn.Module):
    """w2(SiLU(gate(x)) * dropout(w1(x))), then dropout; all three maps nested."""

    def __init__(self, sizes, bias=True, dropout=0.1):
        super().__init__()
        self.gate = MRLLinear(sizes, bias=bias)
        self.w_1 = MRLLinear(sizes, bias=bias)
        self.w_2 = MRLLinear(sizes, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.w_2(F.silu(self.gate(x)) * self.dropout(self.w_1(x))))


class LRUBlock(nn.Module):
    """Pre-norm block: h = x + LRU(LN(x)); out = h + FFN(LN(h))."""

    def __init__(self, sizes, r_min, r_max, bias, dropout, attn_dropout):
        super().__init__()
        self.input_norm = MRLLayerNorm(sizes)
        self.lru = LRULayer(sizes, r_min=r_min, r_max=r_max, bias=bias, dropout=attn_dropout)
        self.post_norm = MRLLayerNorm(sizes)
        self.feed_forward = FeedForward(sizes, bias=bias, dropout=dropout)

    def forward(self, x, packed, select=None, lru_inputs=None):
        """lru_inputs: the LRU's scan inputs of x's rows, when precomputed (FMRLRec.first_lru_inputs)."""
        mixed = self.lru(self.input_norm(x) if lru_inputs is None else None, packed, select, lru_inputs)
        h = (x if select is None else x[select]) + mixed
        return h + self.feed_forward(self.post_norm(h))


class FMRLRec(nn.Module):
    """The nested recommender. Feature tables are (N + 1, d) tensors with a zero row 0 (padding);
    with neither table the model learns an ID table of width D instead (the ID-only ablation).
    `item_id_embedding=True` (beyond the paper) adds a learned ID table to the projected features:
    item i is W f_i + b + e_i, nested like every other layer (its first s columns serve size s).

    The method's two readings (docs/method.md):
      loss, per_size = model.loss(tokens, labels)   # training: (B, L) inputs and next-item labels
      scores = model.scores(tokens)                 # (M, B, N + 1): every size's next-item scores
    `tokens` may also be a PackedBatch (model/packing.py) that the caller built on the host, as the
    trainer and the evaluator do. How it is computed quickly: `fast_path` (model/fast_path.py)."""

    def __init__(self, num_items, sizes, text_features=None, image_features=None, num_blocks=1,
                 dropout=0.1, attn_dropout=0.1, r_min=0.0, r_max=0.1, bias=True, item_id_embedding=False,
                 id_dropout=0.0, content_loss_weight=0.0):
        super().__init__()
        self.num_items = int(num_items)
        self.sizes = list(sizes)
        self.widths = chunk_widths(self.sizes)
        width = self.sizes[-1]
        tables = [t for t in (text_features, image_features) if t is not None]
        for table in tables:
            if table.dim() != 2 or table.shape[0] != self.num_items + 1:
                raise ValueError(f'feature table of shape {tuple(table.shape)} does not match '
                                 f'{self.num_items} items (expected ({self.num_items + 1}, d))')
        if item_id_embedding and not tables:
            raise ValueError('item_id_embedding adds an ID table to projected features, but no feature '
                             'table was given (without features the model is ID-only already)')
        if (id_dropout or content_loss_weight) and not item_id_embedding:
            raise ValueError('id_dropout and content_loss_weight train the hybrid\'s content path; this model has '
                             'no ID table beside its features (item_id_embedding is off)')
        if not 0.0 <= id_dropout < 1.0 or content_loss_weight < 0:
            raise ValueError(f'need 0 <= id_dropout < 1 and content_loss_weight >= 0, got {id_dropout}, '
                             f'{content_loss_weight}')
        # The hybrid's training-only remedies for items without a trained ID row (docs/content_features.md,
        # Cold start): they change the loss, never the scores.
        self.id_dropout, self.content_loss_weight = float(id_dropout), float(content_loss_weight)
        if tables:
            # Frozen features are buffers, not parameters, and are not saved in checkpoints.
            self.register_buffer('item_features', torch.cat(tables, dim=1).float(), persistent=False)
            self.projection = nn.Linear(self.item_features.shape[1], width)
        else:
            self.item_features = None
            self.projection = None
        self.id_embedding = self._id_table(width) if item_id_embedding or not tables else None
        self.embed_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(LRUBlock(self.sizes, r_min, r_max, bias, dropout, attn_dropout)
                                    for _ in range(num_blocks))
        self.fast_path = FastPathSettings()
        self.feature_cast = AutocastCopy()
        # (N + 1,) bool: items the training softmax leaves out; derived from the run's options, not saved
        self.register_buffer('training_exclusion', None, persistent=False)

    def exclude_from_training(self, item_ids):
        """Leave `item_ids` out of the training softmax, as items that do not exist yet (the cold-start
        protocol, datasets/cold_start.py), and zero their ID rows: they get no gradient, so the rows
        stay zero, which is what an item added after training gets (add_items.py). Scoring is unchanged."""
        mask = torch.zeros(self.num_items + 1, dtype=torch.bool)
        mask[torch.as_tensor(item_ids, dtype=torch.long)] = True
        if mask[0]:
            raise ValueError('item 0 is the padding item, not an item to exclude')
        self.training_exclusion = mask.to(next(self.parameters()).device)
        if self.id_embedding is not None:
            with torch.no_grad():
                self.id_embedding.weight[self.training_exclusion] = 0

    def _loss_column_bias(self):
        """(N + 1,) fp32 added to the training logits: MASKED_LOGIT at excluded items; None without."""
        if self.training_exclusion is None:
            return None
        return torch.zeros(self.num_items + 1, device=self.training_exclusion.device).masked_fill_(
            self.training_exclusion, MASKED_LOGIT)

    def _id_table(self, width):
        table = nn.Embedding(self.num_items + 1, width, padding_idx=0)
        # LRURec's ID-table init (truncated normal, std 0.02): N(0, 1) rows would make the
        # first logits of a width-D model huge and the first epochs wasted.
        with torch.no_grad():
            nn.init.trunc_normal_(table.weight, std=0.02, a=-0.04, b=0.04)
            table.weight[0].zero_()
        return table

    @property
    def is_hybrid(self):
        """Projected features plus a learned ID table."""
        return self.projection is not None and self.id_embedding is not None

    def set_fast_path(self, **settings):
        """Change fields of `fast_path` (FastPathSettings); the nested linears follow `fused_linears`."""
        unknown = [name for name in settings if not hasattr(self.fast_path, name)]
        if unknown:
            raise TypeError(f'no fast-path setting {unknown[0]!r}; the settings: {list(vars(self.fast_path))}')
        for name, value in settings.items():
            setattr(self.fast_path, name, value)
        for module in self.modules():
            if isinstance(module, MRLLinear):
                module.fused = self.fast_path.fused_linears

    # ---- the method ------------------------------------------------------------------------
    def item_table(self):
        """(N + 1, D) item representations, shared by the input embedding and the output scores."""
        if self.projection is None:
            return self.id_embedding.weight
        table = self._projected_table()
        return table + self.id_embedding.weight if self.is_hybrid else table

    def _projected_table(self):
        """(N + 1, D) the projected features alone: the whole item table unless the model is a hybrid."""
        return frozen_input_linear(self.feature_cast.of(self.item_features), self.projection.weight,
                                   self.projection.bias)

    def _training_id_rows(self):
        """The hybrid's ID rows for one training step: with id_dropout p, each item's whole row is dropped
        (zero, not rescaled: as an item without a trained row) with probability p, the same for the
        inputs and the scores of the step."""
        rows = self.id_embedding.weight
        if not (self.training and self.id_dropout):
            return rows
        keep = torch.rand(rows.shape[0], 1, device=rows.device) >= self.id_dropout
        return rows * keep

    def forward(self, tokens, labels, reduction='sum'):
        """The training loss, as `loss`: DistributedDataParallel reduces gradients only of what goes
        through forward."""
        return self.loss(tokens, labels, reduction)

    def loss(self, tokens, labels, reduction='sum'):
        """Cross-entropy of each size over the labelled positions, combined over sizes (summed, as
        the paper; or averaged, as the released code). Returns (loss, per-size losses (M,)).

        tokens, labels: (B, L) left-padded inputs and their next items (0: no label); or a
        PackedBatch of the labelled positions and their (q,) labels (model/packing.py).
        """
        if not isinstance(tokens, PackedBatch):
            query_mask = labels > 0
            tokens, labels = pack_batch(tokens, query_mask), labels[query_mask]
        # The factored tail needs the item table to be a projection of frozen features alone; the
        # hybrid's ID table is trainable per item, so it takes the plain path.
        if self._embeds_from_features() and not self.is_hybrid:
            per_size = self._factored_loss(tokens, labels)
        else:
            id_rows, projected = None, None
            if self.is_hybrid:  # the projection is kept apart for the content loss below
                id_rows, projected = self._training_id_rows(), self._projected_table()
            table = self.item_table() if projected is None else projected + id_rows
            hidden = self._hidden_states(tokens, table, own_table=True, id_rows=id_rows)
            per_size = nested_cross_entropy(hidden, table, labels, self.widths,  # running-sum logits
                                            item_chunk=self.fast_path.loss_item_chunk,
                                            column_bias=self._loss_column_bias())
        total = per_size.sum() if reduction == 'sum' else per_size.mean()
        if self.content_loss_weight and self.training:
            # The same histories scored against the projected features alone, as items without an ID row
            # are: the content path stays a scorer on its own (docs/content_features.md, Cold start).
            content = nested_cross_entropy(hidden, projected, labels, self.widths,
                                           item_chunk=self.fast_path.loss_item_chunk,
                                           column_bias=self._loss_column_bias())
            total = total + self.content_loss_weight * (content.sum() if reduction == 'sum' else content.mean())
        return total, per_size.detach()

    @torch.no_grad()
    def scores(self, tokens, item_table=None):
        """fp32 scores (M, B, N + 1) of the next item after each history, for every size (the
        padding item is not masked). tokens: (B, L) left-padded histories, or their PackedBatch
        from pack_last_position; item_table: a precomputed `item_table()` (evaluation makes it once
        per pass) or an exported one.

        Under autocast only the hidden states run in low precision: the score matmul is cheap for
        one position per user, and bf16 scores would tie many items (which ranking must not see).
        """
        running = self.running_scores(tokens, item_table)
        first = next(running)
        scores = first.new_empty(len(self.sizes), *first.shape)
        scores[0] = first
        for index, size_scores in enumerate(running, start=1):
            scores[index] = size_scores
        return scores

    @torch.no_grad()
    def running_scores(self, tokens, item_table=None, lru_inputs=None, input_table=None):
        """The scores of `scores`, one size at a time, smallest first, as ONE fp32 (B, N + 1)
        buffer that each next size updates in place (adding its chunk's product): use or copy it
        before asking for the next size. Evaluation ranks each size straight from it, with no
        (M, B, N + 1) tensor and no copy of the running sum per size. lru_inputs: from
        `first_lru_inputs(item_table)`, once per pass (evaluation). input_table: the rows the
        tokens index, when they are not `item_table`'s (evaluation over a large catalogue passes the
        rows of the items that occur in the histories, tokens renumbered into them, and their
        lru_inputs)."""
        table = self.item_table() if item_table is None else item_table
        hidden = self.hidden_states(tokens, table if input_table is None else input_table, lru_inputs)
        buffer = None
        for h_chunk, e_chunk in zip(hidden.split(self.widths, dim=-1), table.split(self.widths, dim=-1)):
            # The context is entered per product: a generator must not leave it on in its caller.
            with torch.autocast(hidden.device.type, enabled=False), fast_fp32_matmul(hidden.device):
                h_chunk, e_chunk = h_chunk.float(), e_chunk.float()
                buffer = h_chunk @ e_chunk.t() if buffer is None else buffer.addmm_(h_chunk, e_chunk.t())
            yield buffer

    def hidden_states(self, tokens, item_table=None, lru_inputs=None):
        """Hidden states (q, D), in row-major order: of the last position of (B, L) tokens, or of
        a PackedBatch's query positions. item_table, lru_inputs: as in `running_scores`."""
        packed = tokens if isinstance(tokens, PackedBatch) else pack_last_position(tokens)
        if item_table is None:
            return self._hidden_states(packed, self.item_table(), own_table=True, lru_inputs=lru_inputs)
        return self._hidden_states(packed, item_table, own_table=False, lru_inputs=lru_inputs)

    @torch.no_grad()
    def first_lru_inputs(self, item_table):
        """The first block's LRU scan inputs of every item, (N + 1, D) complex, from `item_table()`.
        Out of training they depend on the item alone (the embedding dropout is off), so a pass
        over many users computes them once instead of once per history position."""
        if self.training:
            raise RuntimeError('first_lru_inputs is for evaluation: in training the embedding dropout '
                               'makes each position\'s inputs differ')
        block, inputs = self.blocks[0], None
        # The projection in slices of rows: its (N + 1, 2D) output never exists whole beside the
        # result. The norm runs once (a module called once per pass, as memory trackers expect).
        normed = block.input_norm(item_table)
        for start, rows in zip(range(0, len(normed), LRU_INPUT_ROWS), normed.split(LRU_INPUT_ROWS)):
            part = block.lru.scan_inputs(rows)
            if inputs is None:
                inputs = part.new_empty(len(item_table), part.shape[1])
            inputs[start:start + len(rows)] = part
        return inputs

    def size_logits(self, hidden, item_table):
        """Logits of every size, [(q, N + 1)] * M, by a running sum over chunks (with autograd)."""
        logits, total = [], None
        # split, not slices: the gradient of a slice would materialise a full-size zero tensor.
        chunks = zip(hidden.split(self.widths, dim=-1), item_table.split(self.widths, dim=-1))
        for h_chunk, e_chunk in chunks:
            # addmm adds the previous size's logits inside the matmul: no extra pass over (q, N + 1).
            total = h_chunk @ e_chunk.t() if total is None else torch.addmm(total, h_chunk, e_chunk.t())
            logits.append(total)
        return logits

    # ---- the fast path's pieces ------------------------------------------------------------
    def _embeds_from_features(self):
        """Whether the training path projects the inputs' own feature rows (see `_embed`)."""
        return self.projection is not None and torch.is_grad_enabled() and self.projection.weight.requires_grad

    def _embed(self, tokens, table, own_table, id_rows=None):
        """Input embeddings: rows of the item table. While training on a table this model projected
        itself, the rows are projected from the tokens' own feature rows instead (the same numbers,
        ~1 GFLOP): the table's gradient is then the scores' alone, not also a dense (N + 1, D)
        scatter of a few hundred rows that must be zero-filled, added and freed every step."""
        if own_table and self._embeds_from_features():
            projected = self.projection(self.item_features[tokens])
            # F.embedding without padding_idx: the rows get the gradient the table's rows get when
            # looked up (as in the ID-only model and the reference)
            if not self.is_hybrid:
                return projected
            return projected + F.embedding(tokens, self.id_embedding.weight if id_rows is None else id_rows)
        return F.embedding(tokens, table)

    def _hidden_states(self, packed, table, own_table, lru_inputs=None, id_rows=None):
        x = self.embed_dropout(self._embed(packed.tokens, table, own_table, id_rows))
        if lru_inputs is not None and self.training:
            raise RuntimeError('precomputed LRU inputs are for evaluation (see first_lru_inputs)')
        last = len(self.blocks) - 1
        for index, block in enumerate(self.blocks):
            inputs = lru_inputs[packed.tokens] if index == 0 and lru_inputs is not None else None
            # Only the query rows leave the last block: the rest fed its scan already.
            x = block(x, packed, packed.query if index == last else None, inputs)
        return x

    def _factored_loss(self, packed, labels):
        """The loss with only the leading chunks of the item table projected; the trailing (wide)
        chunks are scored from the features through their projection rows (model/nested_loss.py)."""
        features = self.feature_cast.of(self.item_features)
        direct = self.fast_path.projected_chunks
        if direct is None:
            direct = projected_chunk_count(self.widths, len(labels), features.shape[1], features.shape[0])
        prefix = sum(self.widths[:direct])
        split = [prefix, self.sizes[-1] - prefix]
        weight_prefix, weight_tail = self.projection.weight.split(split)
        bias_prefix, _ = self.projection.bias.split(split)  # the tail's bias only shifts logit rows
        table = frozen_input_linear(features, weight_prefix, bias_prefix) if prefix else None
        hidden = self._hidden_states(packed, None, own_table=True)
        return nested_cross_entropy(hidden, table, labels, self.widths, features, weight_tail,
                                    self.fast_path.loss_item_chunk, self._loss_column_bias())
