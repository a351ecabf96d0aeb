"""Batched top-k over the whole catalogue with one exported size (deploy/export_format.py)."""
import re

import numpy as np
import torch

from model.packing import pack_last_position

_SEPARATORS = re.compile(r'[,\s]+')


class HistoryError(ValueError):
    """A history that names an item the model does not know."""


class Recommender:
    """Batched top-k over the whole catalogue with a size-s model (from deploy.export_format.load_export)."""

    def __init__(self, exported, device='cpu', new_item_boost=0.0):
        self.device = torch.device(device)
        # Added to the scores of the items add_items.py appended: without a trained ID row a hybrid buries
        # them (docs/content_features.md, New-item boost; eval.py --new_item_boost chooses one on validation).
        self.new_item_boost = float(new_item_boost)
        self.added_items = torch.tensor([int(record['item']) for record in exported.info.get('added_items', [])],
                                        dtype=torch.long, device=self.device)
        self.model = exported.model.to(self.device).eval()
        self.table = exported.item_table.to(self.device)
        self.max_len = exported.max_len
        self.asins = exported.asins
        self.titles = exported.titles
        self.num_items = self.model.num_items
        self.asin_to_id = {asin: item for item, asin in enumerate(self.asins) if item > 0 and asin}

    def item_id(self, token):
        """An ASIN or a 1-based item id -> item id; HistoryError when it is neither."""
        if token in self.asin_to_id:
            return self.asin_to_id[token]
        if token.isascii() and token.isdigit() and 1 <= int(token) <= self.num_items:
            return int(token)
        raise HistoryError(f'unknown item {token!r}: not an ASIN of this model\'s catalogue and not an '
                           f'item id in 1..{self.num_items}')

    def parse_history(self, text, skip_unknown=False):
        """'B004756YJA,B004ZT0SSG' or '12 85 3' -> item ids (unknown ones dropped with skip_unknown)."""
        ids = []
        for token in (t for t in _SEPARATORS.split(text.strip()) if t):
            try:
                ids.append(self.item_id(token))
            except HistoryError:
                if not skip_unknown:
                    raise
        return ids

    def input_tokens(self, histories):
        """(B, max_len) left-padded inputs: each history's last max_len items."""
        tokens = np.zeros((len(histories), self.max_len), dtype=np.int64)
        for row, history in enumerate(histories):
            recent = history[-self.max_len:]
            if recent:
                tokens[row, self.max_len - len(recent):] = recent
        return torch.from_numpy(tokens)

    @torch.no_grad()
    def scores(self, histories, exclude_history=True):
        """(B, N + 1) scores of every item; the padding item (and history items) at -inf."""
        packed = pack_last_position(self.input_tokens(histories)).to(self.device)
        hidden = self.model.hidden_states(packed, self.table)          # (B, s)
        scores = hidden @ self.table.t()                                # (B, N + 1)
        if self.new_item_boost and len(self.added_items):
            scores[:, self.added_items] += self.new_item_boost
        scores[:, 0] = float('-inf')
        if exclude_history:
            longest = max((len(h) for h in histories), default=0)
            if longest:
                seen = np.zeros((len(histories), longest), dtype=np.int64)
                for row, history in enumerate(histories):
                    seen[row, :len(history)] = history
                scores.scatter_(1, torch.from_numpy(seen).to(self.device), float('-inf'))  # padding 0 is -inf anyway
        return scores

    @torch.no_grad()
    def top_k(self, histories, k=10, exclude_history=True, batch_size=256):
        """(item ids (U, k'), scores (U, k')) best first, k' = min(k, N); excluded slots score -inf."""
        k = min(int(k), self.num_items)
        items = torch.empty(len(histories), k, dtype=torch.long)
        values = torch.empty(len(histories), k)
        # Batches of similar lengths: the scan runs over a window as long as the batch's longest
        # input, so sorting by length makes most batches short (several times faster).
        order = sorted(range(len(histories)), key=lambda u: min(len(histories[u]), self.max_len))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            best = self.scores([histories[u] for u in rows], exclude_history).topk(k, dim=1)
            items[rows] = best.indices.cpu()
            values[rows] = best.values.cpu()
        return items, values

    def records(self, items, values):
        """Per user, a list of {"item", "asin", "score", "title"}, best first (excluded slots dropped)."""
        result = []
        for row_items, row_values in zip(items.tolist(), values.tolist()):
            result.append([{'item': item, 'asin': self.asins[item] or None, 'score': score,
                            'title': None if self.titles is None else self.titles[item]}
                           for item, score in zip(row_items, row_values) if score != float('-inf')])
        return result
