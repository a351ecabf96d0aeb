"""Full-ranking metrics (docs/method.md, Metrics): Recall@k, NDCG@k and MRR@k from each target's rank."""
import math

import torch

METRIC_NAMES = ('Recall', 'NDCG', 'MRR')
UNRANKED = 0  # the rank of a user whose scores are not all finite: no metric may be computed from it
# Where a target stands among items scored exactly like it (docs/content_features.md, Ties): 'first'
# (ahead of them, the default) or 'last' (behind them); the two bound any tie order's metrics.
TIE_RULES = ('first', 'last')


class NonFiniteScoresError(ValueError):
    """Some users' scores hold NaN or +inf (or a non-finite target score) at some sizes: the model's
    weights or inputs are broken, and no metric computed from these scores would mean anything."""

    def __init__(self, users_by_size, num_users):
        self.users_by_size, self.num_users = users_by_size, num_users
        where = ', '.join(f'{size} ({count} of {num_users} users)' for size, count in users_by_size.items())
        super().__init__(f'the scores are NaN or infinite at size{"s" if len(users_by_size) > 1 else ""} {where}')


def target_ranks(scores, targets, ties='first', excluded=None):
    """1-based rank of each target among all items: 1 + number of items scored strictly higher.

    Ranks by counting instead of sorting (ties count in the target's favour, as a stable sort
    that puts the target first would). With ties='last' the target ranks behind every other item
    scored exactly like it (1 + number of other items scored at least as high). A row holding NaN
    or +inf, or whose target scores -inf, gets UNRANKED (0): NaN never compares higher, so counting
    alone would rank its target first. -inf elsewhere is a masked item (padding, history) and is fine.

    excluded: (R, X) item indices per row to rank as if they scored -inf (padding, history),
    without writing to `scores`; -1 marks unused entries, and an index appears once per row and
    never as the row's target (trainer/evaluate.excluded_items builds them).
    """
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {', '.join(TIE_RULES)}, not {ties!r}")
    target_scores = scores.gather(1, targets.unsqueeze(1))
    # Counting in int32 is ~4x faster than the default int64 sum of a bool tensor (same counts).
    # With ties='last' the target itself is among those >= its score: no + 1.
    above = torch.ge if ties == 'last' else torch.gt
    ranks = above(scores, target_scores).sum(dim=1, dtype=torch.int32).long() + (ties == 'first')
    if excluded is not None:  # a masked item is never above the target: take back those counted
        in_use = excluded >= 0
        counted = above(scores.gather(1, excluded.clamp(min=0)), target_scores) & in_use
        ranks -= counted.sum(dim=1, dtype=torch.int32).long()
    # amax propagates NaN and costs a fifth of the count: the check is nearly free.
    finite = torch.isfinite(scores.amax(dim=1)) & torch.isfinite(target_scores.squeeze(1))
    if excluded is not None and not bool(finite.all()):
        # A non-finite score may sit at a masked item, where it would not count: rank those rows
        # (rare: a broken model) from a masked copy.
        rows = (~finite).nonzero().squeeze(1)
        hits = torch.zeros(len(rows), scores.shape[1], dtype=torch.int32, device=scores.device)
        hits.scatter_add_(1, excluded[rows].clamp(min=0), in_use[rows].int())
        ranks[rows] = target_ranks(scores[rows].masked_fill(hits > 0, float('-inf')), targets[rows], ties)
        return ranks
    return torch.where(finite, ranks, torch.full_like(ranks, UNRANKED))


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
