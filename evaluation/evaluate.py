"""Evaluation of every nested size at once: the item table is projected once per pass, only the
last position is computed, and targets are ranked by counting (no sort).

With `amp='bf16'` the table and the hidden states are computed in bf16 but the scores in fp32
(FMRLRec.scores): bf16 scores would tie many items with the target, and the metrics would read
those ties as a random order of the tied items (evaluation/metrics.py), not the order fp32 scores give.
"""
import torch
from tqdm import tqdm

from evaluation.metrics import (BEST, DEFAULT_TIES, UNRANKED, NonFiniteScoresError, check_tie_rule, metric_sums,
                                ordered_metric_names, target_ranks)
from model.packing import pack_last_position
from utils import thread_governor
from utils.runtime import autocast


def _to_device(tensor, device):
    """Host batch -> device without a synchronous copy: pinned, then non-blocking, on CUDA."""
    if device.type == 'cuda':
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def evaluate_ranks(model, inputs, targets, histories, num_sizes, batch_size=64, device='cpu',
                   mask_history=False, amp='none', progress=True, description='eval', boost=None):
    """(M, U, 2) best and worst 1-based rank of each user's target for every size, computed on
    `device` (evaluation/metrics.target_ranks; the tie rule is applied by metrics_from_ranks).

    boost: (items (K,), values (C, M)) to rank with values[c, m] added to the size-m scores of `items`
    (evaluation/new_item_boost.py); the ranks are then (C, M, U, 2), one set per row of values."""
    if len(targets) and int(targets.min()) < 1:
        raise ValueError('evaluation targets must be item ids >= 1 (0 is the padding item)')
    if boost is not None and (boost[1].dim() != 2 or boost[1].shape[1] != num_sizes):
        raise ValueError(f'boost values of shape {tuple(boost[1].shape)}: expected (C, {num_sizes}), one per size')
    with torch.no_grad():
        return _evaluate_ranks(model, inputs, targets, histories, num_sizes, batch_size, torch.device(device),
                               mask_history, amp, progress, description, boost)


def _evaluate_ranks(model, inputs, targets, histories, num_sizes, batch_size, device, mask_history, amp,
                    progress, description, boost=None):
    was_training = model.training
    model.eval()
    shape = (num_sizes, len(inputs), 2) if boost is None else (len(boost[1]), num_sizes, len(inputs), 2)
    ranks = torch.empty(shape, dtype=torch.long, device=device)
    if boost is not None:
        boost = (boost[0].to(device), boost[1].float().cpu())
    with autocast(device, amp):
        table = model.item_table()
        if torch.is_tensor(table):
            table = table.float()  # once per pass; the scores are fp32 (a no-op without amp)
        inputs, input_table = compact_inputs(inputs, table)
        lru_inputs = model.first_lru_inputs(input_table)  # once per pass, not once per history position
    # Users in order of history length: a batch's scan spans its longest history, so batches of
    # alike lengths compute far fewer positions. Each user's rank does not depend on the batch.
    order = torch.argsort((inputs > 0).sum(dim=1), stable=True)
    for start in tqdm(range(0, len(inputs), batch_size), desc=description, disable=not progress, leave=False):
        thread_governor.tick()  # utils/thread_governor.py
        users = order[start:start + batch_size]
        packed = pack_last_position(inputs[users])
        if device.type == 'cuda':
            packed = packed.pin_memory()
        packed = packed.to(device, non_blocking=True)
        batch_targets = _to_device(targets[users], device)
        excluded = _to_device(excluded_items(histories[users] if mask_history else None, targets[users]), device)
        where = _to_device(users, device)
        with autocast(device, amp):
            scores = model.running_scores(packed, table, lru_inputs, input_table)
            for index, size_scores in enumerate(scores):  # fp32 (B, N + 1)
                if boost is None:
                    ranks[index, where] = target_ranks(size_scores, batch_targets, excluded)
                else:
                    boosted_ranks(ranks[:, index], where, size_scores, batch_targets, excluded, boost[0],
                                  boost[1][:, index].tolist())
    model.train(was_training)
    return ranks


def boosted_ranks(out, where, scores, targets, excluded, items, values):
    """out[c, where] = the targets' ranks with values[c] added to the scores of `items`. The scores are
    running_scores' buffer, which the next size adds to: their columns are put back exactly (a copy,
    not a subtraction, which would round)."""
    original = scores[:, items].clone()
    for row, value in enumerate(values):
        scores[:, items] = original + value
        out[row, where] = target_ranks(scores, targets, excluded)
    scores[:, items] = original


def compact_inputs(inputs, table):
    """(inputs, the table rows they index). When the histories hold at most half the catalogue, the
    inputs are renumbered into the rows of the items they hold (0, the padding, stays 0), so that the
    per-item LRU inputs are computed for those items only: their memory then follows the histories,
    not the catalogue (a million items at D = 1024 would take 8 GB). Otherwise nothing changes."""
    if not torch.is_tensor(table):
        return inputs, table
    used = torch.unique(torch.cat([inputs.new_zeros(1), inputs.flatten()]))  # sorted: the padding 0 first
    if 2 * len(used) > len(table):
        return inputs, table
    renumber = torch.zeros(len(table), dtype=inputs.dtype)
    renumber[used] = torch.arange(len(used), dtype=inputs.dtype)
    return renumber[inputs], table[used.to(table.device)]


def excluded_items(histories, targets):
    """(B, X) items each user's target is ranked as if they scored -inf (evaluation/metrics.target_ranks):
    the padding item 0 and, given the (B, H) zero-padded histories, each other history item once;
    -1 marks unused entries. A repeated target stays rankable (the released protocol's behaviour)."""
    padding = torch.zeros(len(targets), 1, dtype=torch.long)
    if histories is None:
        return padding
    items = histories.sort(dim=1).values
    repeated = torch.zeros_like(items, dtype=torch.bool)
    repeated[:, 1:] = items[:, 1:] == items[:, :-1]
    items = items.masked_fill(repeated | (items == targets.unsqueeze(1)) | (items <= 0), -1)
    return torch.cat([padding, items], dim=1)


def metrics_from_ranks(ranks, sizes, ks, ties=DEFAULT_TIES):
    """{size: {metric: mean over users}} from (M, U, 2) rank pairs, ties read by the rule `ties`
    (evaluation/metrics.TIE_RULES); NonFiniteScoresError, naming the sizes, when some users could not be
    ranked (their scores were not finite)."""
    check_tie_rule(ties)
    order = ordered_metric_names(ks)
    count = ranks.shape[1]
    unranked = (ranks[..., BEST] == UNRANKED).sum(dim=1).tolist()
    if any(unranked):
        raise NonFiniteScoresError({size: n for size, n in zip(sizes, unranked) if n}, count)
    result = {}
    for index, size in enumerate(sizes):
        sums = metric_sums(ranks[index].cpu(), ks, ties)
        result[size] = {name: sums[name] / count for name in order}
    return result


def evaluate(model, examples, sizes, ks, batch_size=64, device='cpu', mask_history=False, amp='none',
             progress=True, description='eval', ties=DEFAULT_TIES):
    """examples: (users, inputs (U, L), targets (U,), histories (U, H)) from datasets.p5."""
    _, inputs, targets, histories = examples
    ranks = evaluate_ranks(model, inputs, targets, histories, len(sizes), batch_size, device,
                           mask_history, amp, progress, description)
    return metrics_from_ranks(ranks, sizes, ks, ties)
