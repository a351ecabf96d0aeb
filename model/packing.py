"""Which positions of a batch the model computes, decided once per batch (on the host).

Padding never feeds a real position (the scan cuts its carry), so a batch only needs the positions
that carry a real item or whose output is asked for (a label, or the last position at evaluation),
and the scan only needs the trailing window that holds them. Building this on the CPU before the
batch is copied keeps data-dependent shapes out of the device step (no host synchronisation).
"""
from dataclasses import dataclass

import torch


@dataclass
class PackedBatch:
    batch_size: int
    window: int              # scan length: a power of two covering every computed position
    rows: torch.Tensor       # (n,) flat index b * window + t of each computed position, row-major
    tokens: torch.Tensor     # (n,) item id at each computed position (0 where an input is padding)
    carry_mask: torch.Tensor # (batch_size, window) True where a real item passes its state on
    query: torch.Tensor      # (q,) indices into `rows` of the positions whose outputs are returned

    def to(self, device, non_blocking=False):
        move = lambda t: t.to(device, non_blocking=non_blocking)
        return PackedBatch(self.batch_size, self.window, move(self.rows), move(self.tokens),
                           move(self.carry_mask), move(self.query))

    def pin_memory(self):
        return PackedBatch(self.batch_size, self.window, self.rows.pin_memory(), self.tokens.pin_memory(),
                           self.carry_mask.pin_memory(), self.query.pin_memory())


def next_power_of_two(n):
    return 1 << max(0, int(n) - 1).bit_length()


def pack_batch(tokens, query_mask):
    """tokens: (B, L) left-padded item ids; query_mask: (B, L) bool, positions to return outputs for."""
    if tokens.dim() != 2 or query_mask.shape != tokens.shape:
        raise ValueError(f'tokens and query_mask must both be (B, L), got {tuple(tokens.shape)} '
                         f'and {tuple(query_mask.shape)}')
    batch, length = tokens.shape
    carry = tokens > 0
    compute = carry | query_mask
    used_columns = compute.any(dim=0).nonzero()
    first = int(used_columns[0]) if len(used_columns) else length - 1
    span = length - first
    window = next_power_of_two(span)
    pad = window - span
    pad_cols = lambda t: torch.nn.functional.pad(t[:, first:], (pad, 0))
    tokens_w, carry_w, compute_w, query_w = (pad_cols(t) for t in (tokens, carry, compute, query_mask))
    rows = compute_w.flatten().nonzero().squeeze(1)
    query = query_w.flatten()[rows].nonzero().squeeze(1)
    return PackedBatch(batch, window, rows, tokens_w.flatten()[rows], carry_w, query)


def pack_last_position(tokens):
    """Evaluation: only the last position's output is needed."""
    query_mask = torch.zeros_like(tokens, dtype=torch.bool)
    query_mask[:, -1] = True
    return pack_batch(tokens, query_mask)
