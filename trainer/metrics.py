"""Full-ranking metrics (SPEC §5): Recall@k, NDCG@k and MRR@k from each target's rank."""
import math

import torch

METRIC_NAMES = ('Recall', 'NDCG', 'MRR')


def target_ranks(scores, targets):
    """1-based rank of each target among all items: 1 + number of items scored strictly higher.

    Ranks by counting instead of sorting (ties count in the target's favour, as a stable sort
    that puts the target first would). NaN scores never outrank the target.
    """
    target_scores = scores.gather(1, targets.unsqueeze(1))
    # Counting in int32 is ~4x faster than the default int64 sum of a bool tensor (same counts).
    return (scores > target_scores).sum(dim=1, dtype=torch.int32).long() + 1


def metric_sums(ranks, ks):
    """Sums over users of each metric (divide by the user count for the mean)."""
    ranks = ranks.double()
    sums = {}
    for k in ks:
        hit = ranks <= k
        sums[f'Recall@{k}'] = hit.sum().item()
        sums[f'NDCG@{k}'] = torch.where(hit, 1.0 / torch.log2(ranks + 1), torch.zeros_like(ranks)).sum().item()
        sums[f'MRR@{k}'] = torch.where(hit, 1.0 / ranks, torch.zeros_like(ranks)).sum().item()
    return sums


def ordered_metric_names(ks):
    return [f'{name}@{k}' for k in ks for name in METRIC_NAMES]


def ndcg_at(rank, k):
    """Hand formula for one user (used by tests and docs)."""
    return 1.0 / math.log2(rank + 1) if rank <= k else 0.0
