"""Cross-entropy of every nested size from running-sum logits, with a hand-written backward.

Logits of size s_k = logits of size s_{k-1} + h_k e_k^T (chunk k of the hidden states and of the
item table). Autograd would keep a log-softmax per size, zero-fill and scatter a one-hot per size,
add the sizes' gradients pairwise, and concatenate the table's gradient from per-chunk pieces:
about ten (q x N) and three (N x D) temporaries per step, which on the CPU also fragment the heap.
Here the backward walks the sizes from largest to smallest keeping one running gradient
P_k = sum_{j >= k} dL/dlogits_j (the gradient of chunk k's contribution) and writes each chunk's
two products straight into the hidden and table gradients. Same mathematics; tests/test_fast_path.py
checks it against the reference.

Factored tail. With a trainable projection E = F W^T + b of a frozen feature table F (N + 1, d),
chunk k's logits need E_k = F W_k^T, which costs 2 N d c_k to make and as much again for W_k's
gradient. The same contribution is h_k E_k^T = (h_k W_k) F^T + (h_k . b_k): a (q x d) @ (d x N)
product instead, and its backward P_k F (then W_k's gradient H_k^T (P_k F) and h_k's
(P_k F) W_k^T, both without N). With q labelled rows per batch this is cheaper for the wide chunks
(c_k > ~2qd / (2d + 3q); at batch 32, q ~ 220, the chunks of width 256 and 512 of D = 1024), so
those are never projected while training. The bias term h_k . b_k is the same for every item: it
shifts a row of logits, which the softmax ignores, so it is left out (its gradient through the
logits is exactly zero).
"""
from itertools import accumulate

import torch

from model.chunked_loss import ChunkedNestedCrossEntropy, item_chunk_for
from model.fp32_matmul import fast_fp32_matmul

ROW_BUCKET = 32
# The logit of an item left out of the softmax (column_bias): exp() of it is exactly 0 in fp32, and it
# stays finite in bf16, so no -inf - -inf = NaN can arise in a running maximum.
MASKED_LOGIT = -1e30


class NestedCrossEntropy(torch.autograd.Function):
    """per_size (M,) = mean over the q rows of CE(logits of size s_k, targets), in fp32.

    The first `len(widths) - tail` chunks score against `table` (N + 1, s_m); the last `tail`
    against `features` (N + 1, d) through `tail_weight` (D - s_m, d), rows by chunk (factored)."""

    @staticmethod
    def forward(ctx, hidden, table, features, tail_weight, targets, widths, rows, column_bias=None):
        with fast_fp32_matmul(hidden.device):
            return NestedCrossEntropy._forward(ctx, hidden, table, features, tail_weight, targets, widths, rows,
                                               column_bias)

    @staticmethod
    def _forward(ctx, hidden, table, features, tail_weight, targets, widths, rows, column_bias):
        """Rows from `rows` on are padding (see nested_cross_entropy): computed, not counted."""
        target_column = targets[:rows].unsqueeze(1)
        direct = len(widths) - (0 if tail_weight is None else _chunk_count(widths, tail_weight.shape[0]))
        table_chunks = table.split(widths[:direct], dim=1) if direct else ()
        tail_chunks = tail_weight.split(widths[direct:], dim=0) if direct < len(widths) else ()
        log_probs, losses = [], []
        total = None
        for k, h_chunk in enumerate(hidden.split(widths, dim=1)):
            if k < direct:
                left, right = h_chunk, table_chunks[k].t()
            else:  # (h_k W_k) F^T: the same logits without projecting chunk k of the table
                left, right = h_chunk @ tail_chunks[k - direct], features.t()
            # The previous size's logits are added inside the product, in place: no extra pass.
            if total is None:
                total = left @ right
                if column_bias is not None:  # carried into every larger size by the running sum
                    total.add_(column_bias)
            else:
                total.addmm_(left, right)
            # Only the fp32 log-probabilities are kept: the backward needs exp() of them.
            log_prob = torch.log_softmax(total, dim=1, dtype=torch.float32)
            losses.append(-log_prob[:rows].gather(1, target_column).mean())
            log_probs.append(log_prob)
        ctx.widths, ctx.rows, ctx.direct = widths, rows, direct
        ctx.save_for_backward(hidden, table, features, tail_weight, targets, *log_probs)
        return torch.stack(losses)

    @staticmethod
    def backward(ctx, grad_losses):
        with fast_fp32_matmul(grad_losses.device):
            return NestedCrossEntropy._backward(ctx, grad_losses)

    @staticmethod
    def _backward(ctx, grad_losses):
        hidden, table, features, tail_weight, targets, *log_probs = ctx.saved_tensors
        widths, rows, direct = ctx.widths, ctx.rows, ctx.direct
        scales = grad_losses.float() / rows  # d(mean over rows)
        target_column = targets[:rows].unsqueeze(1)
        grad_hidden = torch.empty_like(hidden)
        grad_table_t = grad_tail = None
        if direct:  # (s_m, N + 1): a chunk is a row block
            grad_table_t = table.new_empty(table.shape[1], table.shape[0])
        if tail_weight is not None:
            grad_tail = torch.empty_like(tail_weight)
        tail_start = sum(widths[:direct])
        running = None  # P_k in fp32
        for k, end in reversed(list(enumerate(accumulate(widths)))):
            start = end - widths[k]
            # dL_k/dlogits = scale_k * (softmax - onehot), in place over the saved log-probabilities
            # (a second backward through this graph fails the saved-tensor version check).
            # Padding rows need no masking: their hidden rows are zero (no table or weight
            # gradient) and their hidden gradient is cut off by the padding's backward.
            probs = log_probs[k].exp_()
            # One pass adds the scaled probabilities; the scale stays a tensor (no host sync).
            running = probs.mul_(scales[k]) if running is None else running.addcmul_(probs, scales[k])
            running[:rows].scatter_add_(1, target_column, (-scales[k]).expand(rows, 1))
            del probs
            chunk_gradient = running.to(hidden.dtype)
            if k < direct:
                torch.mm(chunk_gradient, table[:, start:end], out=grad_hidden[:, start:end])
                torch.mm(hidden[:, start:end].t(), chunk_gradient, out=grad_table_t[start:end])
            else:
                pulled = chunk_gradient @ features  # P_k F, (q, d)
                weight = tail_weight[start - tail_start:end - tail_start]
                torch.mm(pulled, weight.t(), out=grad_hidden[:, start:end])
                torch.mm(hidden[:, start:end].t(), pulled, out=grad_tail[start - tail_start:end - tail_start])
        grad_table = None if grad_table_t is None else grad_table_t.t()
        return grad_hidden, grad_table, None, grad_tail, None, None, None, None


def _chunk_count(widths, width):
    """How many trailing chunks add up to `width`."""
    total = 0
    for count, chunk in enumerate(reversed(widths), start=1):
        total += chunk
        if total == width:
            return count
    raise ValueError(f'{width} is not the width of trailing chunks of {list(widths)}')


def projected_chunk_count(widths, rows, feature_dim, num_rows):
    """How many leading chunks to score through the projected table (the rest factored), chosen
    by the multiply-adds of forward and backward together: a projected chunk of width c costs
    2 N c (2d + 3q) (projection, its weight gradient, logits, two gradients), a factored one
    4 q d N + 6 q c d. Chunk widths grow, so the cheap factored chunks are the trailing ones."""
    direct_cost = [2 * num_rows * c * (2 * feature_dim + 3 * rows) for c in widths]
    factored_cost = [4 * rows * feature_dim * num_rows + 6 * rows * c * feature_dim for c in widths]
    totals = [sum(direct_cost[:m]) + sum(factored_cost[m:]) for m in range(len(widths) + 1)]
    return totals.index(min(totals))  # the first minimum; min(key=...) would break a torch.compile graph


def nested_cross_entropy(hidden, table, targets, widths, features=None, tail_weight=None, item_chunk=None,
                         column_bias=None):
    """(M,) fp32 mean cross-entropy of each nested size: hidden (q, D), table (N + 1, D), targets (q,).
    Under autocast the products run in the autocast dtype and the softmax in fp32.

    With `features` (N + 1, d) and `tail_weight` (D - s_m, d), the projection's weight rows of the
    trailing chunks, `table` holds only the first s_m columns (it may be None when s_m = 0) and
    the trailing chunks are scored factored (see the module docstring).

    On the CPU the rows are padded to a multiple of ROW_BUCKET: oneDNN (which runs these products,
    see model/fp32_matmul.py) keeps a kernel per shape, and q changes with every batch; with
    buckets its cache stops growing after a few batches instead of gaining ~10 MB per batch.

    `item_chunk`: columns of the catalogue per chunk of model/chunked_loss.py, whose memory does
    not grow with N; None or 0 chooses (unchunked while its log-probabilities fit, see
    chunked_loss.item_chunk_for).

    `column_bias` (N + 1,): added to every size's logits; MASKED_LOGIT leaves an item out of the
    softmax (its probability and every gradient through it are exactly zero). No target may be one."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
    else:
        dtype = hidden.dtype if table is None else torch.promote_types(hidden.dtype, table.dtype)
    if (features is None) != (tail_weight is None):
        raise ValueError('features and tail_weight go together')
    if tail_weight is not None and tail_weight.shape[0] == 0:
        features = tail_weight = None
    rows = hidden.shape[0]
    if device_type == 'cpu':
        padding = -rows % ROW_BUCKET
        hidden = torch.nn.functional.pad(hidden, (0, 0, 0, padding))
        targets = torch.nn.functional.pad(targets, (0, padding))

    def cast(tensor):
        return None if tensor is None else tensor.to(dtype)
    num_columns = (table if table is not None else features).shape[0]
    chunk = item_chunk_for(len(widths), hidden.shape[0], num_columns, hidden.device, item_chunk)
    with torch.autocast(device_type, enabled=False):
        if chunk is None:
            return NestedCrossEntropy.apply(hidden.to(dtype), cast(table), cast(features), cast(tail_weight),
                                            targets, tuple(widths), rows, cast(column_bias))
        direct = len(widths) - (0 if tail_weight is None else _chunk_count(widths, tail_weight.shape[0]))
        return ChunkedNestedCrossEntropy.apply(hidden.to(dtype), cast(table), cast(features), cast(tail_weight),
                                               targets, tuple(widths), rows, direct, chunk, cast(column_bias))
