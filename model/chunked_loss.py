"""The nested cross-entropy of model/nested_loss.py over column chunks of the catalogue, for large N.

NestedCrossEntropy keeps every size's fp32 log-probabilities (M x q x N floats) for its backward:
85 MB at Beauty's 12k items, 7 GB at a million. Here the forward walks the items C columns at a
time and keeps only each row's running log-sum-exp per size (M x q) and its target logit; the
backward recomputes one column chunk's logits of every size, turns them into that chunk's
gradients, and moves on. Memory is O(M q C) whatever N; the price is the logits computed twice.
The mathematics is the same (per size, logsumexp over all N + 1 columns minus the target's
logit; gradients softmax - onehot), so losses and gradients equal NestedCrossEntropy's to fp32
rounding (tests/test_chunked_loss.py). How C is chosen: `item_chunk_for` below.
"""
import os
from itertools import accumulate

import torch

from model.fp32_matmul import fast_fp32_matmul

# The unchunked loss keeps M x q x N fp32 log-probabilities plus about as much in temporaries.
# It is used while that stays under FULL_BUDGET (and a quarter of the free memory); above it, a
# column chunk's M + 2 logit blocks take about CHUNK_BUDGET (or an eighth of the free memory).
FULL_BUDGET = 1 << 30
SMALL = 256 << 20  # unchunked whatever the free memory says (Beauty at D = 1024: about 180 MB)
# Small chunks are faster: a chunk's logit blocks then stay in the caches between the products and
# the elementwise passes (at 100k items, D = 256: chunks of 2-4k columns cost ~15% over the unchunked
# loss, chunks of 37k ~70%; benchmarks/README.md, "Catalogue size").
CHUNK_BUDGET = 32 << 20
MIN_CHUNK = 1024


def free_memory(device):
    """Bytes free on `device`: the CUDA allocator's view, or the host's MemAvailable."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open('/proc/meminfo') as handle:
            for line in handle:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


def item_chunk_for(num_sizes, rows, num_columns, device, requested=None):
    """Columns per chunk, or None for the unchunked loss. `requested`: a positive int fixes the
    chunk (>= num_columns means unchunked); None or 0 chooses from the memory the logits need."""
    if requested:
        return None if requested >= num_columns else int(requested)
    full = 2 * num_sizes * rows * num_columns * 4
    if full <= SMALL:  # no need to ask the system (nor to make the choice depend on its load)
        return None
    free = free_memory(device)
    if full <= min(FULL_BUDGET, free // 4):
        return None
    per_column = (num_sizes + 2) * rows * 4
    return min(num_columns, max(MIN_CHUNK, min(CHUNK_BUDGET, free // 8) // per_column))


class ChunkedNestedCrossEntropy(torch.autograd.Function):
    """NestedCrossEntropy's arguments and result, plus `direct` (how many leading chunks score
    against `table`; the rest go through `features` and `tail_weight`) and `item_chunk` (C)."""

    @staticmethod
    def forward(ctx, hidden, table, features, tail_weight, targets, widths, rows, direct, item_chunk,
                column_bias=None):
        with fast_fp32_matmul(hidden.device):
            lefts = _lefts(hidden, tail_weight, widths, direct)
            q, num_columns = hidden.shape[0], (table if table is not None else features).shape[0]
            maxes = hidden.new_full((len(widths), q), float('-inf'), dtype=torch.float32)
            sums = hidden.new_zeros((len(widths), q), dtype=torch.float32)
            target_logits = hidden.new_zeros((len(widths), q), dtype=torch.float32)
            for start in range(0, num_columns, item_chunk):
                end = min(start + item_chunk, num_columns)
                inside = (targets >= start) & (targets < end)
                local = (targets - start).clamp(0, end - start - 1).unsqueeze(1)
                for k, logits in enumerate(_chunk_logits(lefts, table, features, widths, direct, start, end,
                                                                         column_bias)):
                    logits = logits.float()
                    new_max = torch.maximum(maxes[k], logits.amax(dim=1))
                    sums[k] = sums[k] * torch.exp(maxes[k] - new_max) + torch.exp(logits - new_max[:, None]).sum(1)
                    maxes[k] = new_max
                    target_logits[k] += torch.where(inside, logits.gather(1, local).squeeze(1), 0.0)
            log_norm = maxes + torch.log(sums)  # (M, q) log-sum-exp over all columns
        ctx.widths, ctx.rows, ctx.direct, ctx.item_chunk = widths, rows, direct, item_chunk
        ctx.save_for_backward(hidden, table, features, tail_weight, targets, log_norm, column_bias)
        return (log_norm - target_logits)[:, :rows].mean(dim=1)

    @staticmethod
    def backward(ctx, grad_losses):
        with fast_fp32_matmul(grad_losses.device):
            return ChunkedNestedCrossEntropy._backward(ctx, grad_losses)

    @staticmethod
    def _backward(ctx, grad_losses):
        hidden, table, features, tail_weight, targets, log_norm, column_bias = ctx.saved_tensors
        widths, rows, direct, item_chunk = ctx.widths, ctx.rows, ctx.direct, ctx.item_chunk
        scales = grad_losses.float() / rows
        lefts = _lefts(hidden, tail_weight, widths, direct)
        bounds = list(zip([0] + list(accumulate(widths))[:-1], accumulate(widths)))
        num_columns = (table if table is not None else features).shape[0]
        # Sums over the column chunks accumulate in fp32 (under autocast the products are bf16).
        grad_hidden = torch.zeros_like(hidden, dtype=torch.float32)
        grad_table_t = table.new_empty(table.shape[1], table.shape[0]) if direct else None
        # P_k F summed over the column chunks, per factored chunk k: its two gradients come after.
        pulled = [hidden.new_zeros(hidden.shape[0], features.shape[1], dtype=torch.float32)
                  for _ in range(len(widths) - direct)]
        labelled = torch.arange(rows, device=hidden.device)
        for start in range(0, num_columns, item_chunk):
            end = min(start + item_chunk, num_columns)
            logits = [chunk.float() for chunk in _chunk_logits(lefts, table, features, widths, direct, start, end,
                                                                 column_bias)]
            inside = (targets[:rows] >= start) & (targets[:rows] < end)
            hit_rows, hit_columns = labelled[inside], targets[:rows][inside] - start
            running = None  # sum over sizes >= k of dL_k/dlogits, this chunk's columns
            for k in reversed(range(len(widths))):
                probs = logits[k].sub_(log_norm[k][:, None]).exp_()
                running = probs.mul_(scales[k]) if running is None else running.addcmul_(probs, scales[k])
                running.index_put_((hit_rows, hit_columns), -scales[k].expand(len(hit_rows)), accumulate=True)
                gradient = running.to(hidden.dtype)
                first, last = bounds[k]
                if k < direct:
                    grad_hidden[:, first:last] += (gradient @ table[start:end, first:last]).float()
                    torch.mm(hidden[:, first:last].t(), gradient, out=grad_table_t[first:last, start:end])
                else:
                    pulled[k - direct] += (gradient @ features[start:end]).float()
        grad_tail = None
        if tail_weight is not None:
            grad_tail = torch.empty_like(tail_weight)
            offset = bounds[direct][0]
            for k in range(direct, len(widths)):
                first, last = bounds[k]
                weight = tail_weight[first - offset:last - offset]
                summed = pulled[k - direct].to(hidden.dtype)
                grad_hidden[:, first:last] = (summed @ weight.t()).float()
                torch.mm(hidden[:, first:last].t(), summed, out=grad_tail[first - offset:last - offset])
        grad_table = None if grad_table_t is None else grad_table_t.t()
        return grad_hidden.to(hidden.dtype), grad_table, None, grad_tail, None, None, None, None, None, None


def _lefts(hidden, tail_weight, widths, direct):
    """Each size chunk's left factor: h_k for a projected chunk, h_k W_k (q, d) for a factored one."""
    chunks = hidden.split(widths, dim=1)
    if direct == len(widths):
        return list(chunks)
    tail = tail_weight.split(widths[direct:], dim=0)
    return list(chunks[:direct]) + [h @ w for h, w in zip(chunks[direct:], tail)]


def _chunk_logits(lefts, table, features, widths, direct, start, end, column_bias=None):
    """The logits of every size for columns start:end, as a running sum over the size chunks (new
    tensors: the backward needs each size's logits at once), plus column_bias[start:end] if given."""
    bounds = list(zip([0] + list(accumulate(widths))[:-1], accumulate(widths)))
    total, out = None, []
    for k, left in enumerate(lefts):
        right = table[start:end, bounds[k][0]:bounds[k][1]].t() if k < direct else features[start:end].t()
        if total is None:
            total = left @ right
            if column_bias is not None:
                total.add_(column_bias[start:end])
        else:
            total = torch.addmm(total, left, right)
        out.append(total)
    return out
