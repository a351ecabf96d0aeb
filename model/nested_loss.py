"""Cross-entropy of every nested size from running-sum logits, with a hand-written backward.

Logits of size s_k = logits of size s_{k-1} + h_k e_k^T (chunk k of the hidden states and of the
item table). Autograd would keep a log-softmax per size, zero-fill and scatter a one-hot per size,
add the sizes' gradients pairwise, and concatenate the table's gradient from per-chunk pieces:
about ten (q x N) and three (N x D) temporaries per step, which on the CPU also fragment the heap.
Here the backward walks the sizes from largest to smallest keeping one running gradient
P_k = sum_{j >= k} dL/dlogits_j (the gradient of chunk k's contribution) and writes each chunk's
two products straight into the hidden and table gradients. Same mathematics; tests/test_fast_path.py
checks it against the reference.
"""
from itertools import accumulate

import torch

from model.fp32_matmul import fast_fp32_matmul

ROW_BUCKET = 32


class NestedCrossEntropy(torch.autograd.Function):
    """per_size (M,) = mean over the q rows of CE(logits of size s_k, targets), in fp32."""

    @staticmethod
    def forward(ctx, hidden, table, targets, widths, rows):
        with fast_fp32_matmul(hidden.device):
            return NestedCrossEntropy._forward(ctx, hidden, table, targets, widths, rows)

    @staticmethod
    def _forward(ctx, hidden, table, targets, widths, rows):
        """Rows from `rows` on are padding (see nested_cross_entropy): computed, not counted."""
        target_column = targets[:rows].unsqueeze(1)
        log_probs, losses = [], []
        total = None
        for h_chunk, e_chunk in zip(hidden.split(widths, dim=1), table.split(widths, dim=1)):
            # addmm adds the previous size's logits inside the product: no extra pass.
            total = h_chunk @ e_chunk.t() if total is None else torch.addmm(total, h_chunk, e_chunk.t())
            # Only the fp32 log-probabilities are kept: the backward needs exp() of them.
            log_prob = torch.log_softmax(total, dim=1, dtype=torch.float32)
            losses.append(-log_prob[:rows].gather(1, target_column).mean())
            log_probs.append(log_prob)
        ctx.widths, ctx.rows = widths, rows
        ctx.save_for_backward(hidden, table, targets, *log_probs)
        return torch.stack(losses)

    @staticmethod
    def backward(ctx, grad_losses):
        with fast_fp32_matmul(grad_losses.device):
            return NestedCrossEntropy._backward(ctx, grad_losses)

    @staticmethod
    def _backward(ctx, grad_losses):
        hidden, table, targets, *log_probs = ctx.saved_tensors
        widths, rows = ctx.widths, ctx.rows
        scales = grad_losses.float() / rows  # d(mean over rows)
        target_column = targets[:rows].unsqueeze(1)
        grad_hidden = torch.empty_like(hidden)
        grad_table_t = table.new_empty(table.shape[1], table.shape[0])  # (D, N + 1): a chunk is a row block
        running = None  # P_k in fp32
        for k, end in reversed(list(enumerate(accumulate(widths)))):
            start = end - widths[k]
            # dL_k/dlogits = scale_k * (softmax - onehot), in place over the saved log-probabilities
            # (a second backward through this graph fails the saved-tensor version check).
            part = log_probs[k].exp_().mul_(scales[k])
            # Padding rows need no masking: their hidden rows are zero (no table gradient) and
            # their hidden gradient is cut off by the padding's backward.
            part[:rows].scatter_add_(1, target_column, (-scales[k]).expand(rows, 1))
            running = part if running is None else running.add_(part)
            del part
            chunk_gradient = running.to(hidden.dtype)
            torch.mm(chunk_gradient, table[:, start:end], out=grad_hidden[:, start:end])
            torch.mm(hidden[:, start:end].t(), chunk_gradient, out=grad_table_t[start:end])
        return grad_hidden, grad_table_t.t(), None, None, None


def nested_cross_entropy(hidden, table, targets, widths):
    """(M,) fp32 mean cross-entropy of each nested size: hidden (q, D), table (N + 1, D), targets (q,).
    Under autocast the products run in the autocast dtype and the softmax in fp32.

    On the CPU the rows are padded to a multiple of ROW_BUCKET: oneDNN (which runs these products,
    see model/fp32_matmul.py) keeps a kernel per shape, and q changes with every batch; with
    buckets its cache stops growing after a few batches instead of gaining ~10 MB per batch."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
    else:
        dtype = torch.promote_types(hidden.dtype, table.dtype)
    rows = hidden.shape[0]
    if device_type == 'cpu':
        padding = -rows % ROW_BUCKET
        hidden = torch.nn.functional.pad(hidden, (0, 0, 0, padding))
        targets = torch.nn.functional.pad(targets, (0, padding))
    with torch.autocast(device_type, enabled=False):
        return NestedCrossEntropy.apply(hidden.to(dtype), table.to(dtype), targets, tuple(widths), rows)
