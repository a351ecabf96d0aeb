"""Full-ranking metrics (docs/method.md, Metrics): Recall@k, NDCG@k and MRR@k from each target's rank,
with ties among equal scores read by a rule (docs/content_features.md, Ties)."""
import math

import torch

METRIC_NAMES = ('Recall', 'NDCG', 'MRR')
UNRANKED = 0  # the rank of a user whose scores are not all finite: no metric may be computed from it
# A target's ranks are a pair: BEST ahead of every other item scored exactly like it, WORST behind
# them all. They are equal when nothing ties with the target.
BEST, WORST = 0, 1
# How a tie enters the metrics (docs/content_features.md, Ties): 'expected' (the default, also for
# validation) is the mean of each metric over a uniformly random order of the tied items, so that
# ties never score better than chance; 'first' and 'last' rank the target ahead of / behind them,
# the upper and lower bound of any order.
TIE_RULES = ('expected', 'first', 'last')
DEFAULT_TIES = 'expected'
# Key, beside the metrics of each size in the metrics files, of the share of targets with a tie.
TIED_SHARE = 'tied_share'


class NonFiniteScoresError(ValueError):
    """Some users' scores hold NaN or +inf (or a non-finite target score) at some sizes: the model's
    weights or inputs are broken, and no metric computed from these scores would mean anything."""

    def __init__(self, users_by_size, num_users):
        self.users_by_size, self.num_users = users_by_size, num_users
        where = ', '.join(f'{size} ({count} of {num_users} users)' for size, count in users_by_size.items())
        super().__init__(f'the scores are NaN or infinite at size{"s" if len(users_by_size) > 1 else ""} {where}')


def check_tie_rule(ties):
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {', '.join(TIE_RULES)}, not {ties!r}")


def target_ranks(scores, targets, excluded=None):
    """(R, 2) best and worst 1-based rank of each target among all items (columns BEST, WORST):
    1 + the number of items scored strictly higher, and the number scored at least as high (the
    target included). Ranks by counting instead of sorting. A row holding NaN or +inf, or whose
    target scores -inf, gets UNRANKED (0) in both columns: NaN never compares higher, so counting
    alone would rank its target first. -inf elsewhere is a masked item (padding, history) and is fine.

    excluded: (R, X) item indices per row to rank as if they scored -inf (padding, history),
    without writing to `scores`; -1 marks unused entries, and an index appears once per row and
    never as the row's target (evaluation/evaluate.excluded_items builds them).
    """
    if scores.shape[1] > 2 ** 24:
        raise ValueError(f'{scores.shape[1]} items: targets are ranked by float32 counts, exact up to 2**24 items')
    target_scores = scores.gather(1, targets.unsqueeze(1))
    # One pass counts both: sign(score - target) is +1 above the target, 0 for a tie (IEEE
    # subtraction gives 0 only for equal values, unless denormals are flushed) and -1 below; its
    # float32 sums are exact integers. On CPU this is faster than one bool count, let alone two.
    signs = torch.sub(scores, target_scores).sign_()
    above_minus_below = signs.sum(dim=1, dtype=torch.float32)
    above_plus_below = signs.abs_().sum(dim=1, dtype=torch.float32)
    higher = ((above_plus_below + above_minus_below) / 2).long()
    as_high = scores.shape[1] - ((above_plus_below - above_minus_below) / 2).long()  # the target included
    if excluded is not None:  # a masked item is neither above the target nor tied with it: take back those counted
        in_use = excluded >= 0
        masked_scores = scores.gather(1, excluded.clamp(min=0))
        higher -= (torch.gt(masked_scores, target_scores) & in_use).sum(dim=1)
        as_high -= (torch.ge(masked_scores, target_scores) & in_use).sum(dim=1)
    ranks = torch.stack([higher + 1, as_high], dim=1)
    # amax propagates NaN and costs a fifth of a count: the check is nearly free.
    finite = torch.isfinite(scores.amax(dim=1)) & torch.isfinite(target_scores.squeeze(1))
    if excluded is not None and not bool(finite.all()):
        # A non-finite score may sit at a masked item, where it would not count: rank those rows
        # (rare: a broken model) from a masked copy.
        rows = (~finite).nonzero().squeeze(1)
        hits = torch.zeros(len(rows), scores.shape[1], dtype=torch.int32, device=scores.device)
        hits.scatter_add_(1, excluded[rows].clamp(min=0), in_use[rows].int())
        ranks[rows] = target_ranks(scores[rows].masked_fill(hits > 0, float('-inf')), targets[rows])
        return ranks
    return torch.where(finite.unsqueeze(1), ranks, torch.full_like(ranks, UNRANKED))


def exact_ranks(ranks):
    """(..., 2) rank pairs of targets known to rank exactly at `ranks` (no ties)."""
    return torch.stack([ranks, ranks], dim=-1)


def tied_share(ranks):
    """(...,) share of the targets of (..., U, 2) rank pairs scored exactly like some other item."""
    return (ranks[..., WORST] > ranks[..., BEST]).double().mean(dim=-1)


def _values_at(ranks, k):
    """{metric family: value of each target} for targets at exactly these (float64) ranks."""
    hit = ranks <= k
    zero = torch.zeros_like(ranks)
    return {'Recall': hit.double(), 'NDCG': torch.where(hit, 1.0 / torch.log2(ranks + 1), zero),
            'MRR': torch.where(hit, 1.0 / ranks, zero)}


def metric_values(ranks, k, ties=DEFAULT_TIES):
    """{metric family: (U,) each target's Recall@k, NDCG@k or MRR@k} from (U, 2) rank pairs,
    ties read by the rule `ties` (TIE_RULES). A target without ties gets the same value under all three."""
    check_tie_rule(ties)
    if len(ranks) and int(ranks[:, BEST].min()) < 1:
        raise ValueError('some targets are UNRANKED (their scores were not finite): no metric can be computed')
    best = ranks[:, BEST].double()
    exact = _values_at(ranks[:, WORST].double() if ties == 'last' else best, k)
    if ties != 'expected':
        return exact
    # The rank is uniform on best..worst: the mean of a metric over those ranks is a difference of
    # its prefix sums over ranks 1..k (nothing beyond k counts), divided by the number of ranks.
    tied = ranks[:, WORST] > ranks[:, BEST]
    top, before = ranks[:, WORST].clamp(max=k), (ranks[:, BEST] - 1).clamp(max=k)
    count = (ranks[:, WORST] - ranks[:, BEST] + 1).double()
    positions = torch.arange(1, k + 1, dtype=torch.float64, device=ranks.device)
    values = {}
    for family, at_position in _values_at(positions, k).items():
        prefix = torch.cat([at_position.new_zeros(1), at_position.cumsum(0)])
        values[family] = torch.where(tied, (prefix[top] - prefix[before]) / count, exact[family])
    return values


def metric_sums(ranks, ks, ties=DEFAULT_TIES):
    """Sums over users of each metric from (U, 2) rank pairs (divide by the user count for the mean)."""
    sums = {}
    for k in ks:
        for family, values in metric_values(ranks, k, ties).items():
            sums[f'{family}@{k}'] = values.sum().item()
    return sums


def ordered_metric_names(ks):
    return [f'{name}@{k}' for k in ks for name in METRIC_NAMES]


def ndcg_at(rank, k):
    """Hand formula for one user (used by tests and docs)."""
    return 1.0 / math.log2(rank + 1) if rank <= k else 0.0


def subset_means(ranks, ks, ties=DEFAULT_TIES):
    """{metric: mean, TIED_SHARE: share} over the (U, 2) ranks of a group of users (the popularity
    buckets, the cold-start users); every value None for an empty group (JSON has no NaN)."""
    users = ranks.shape[0]
    if not users:
        return {**{name: None for name in ordered_metric_names(ks)}, TIED_SHARE: None}
    sums = metric_sums(ranks, ks, ties)
    return {**{name: sums[name] / users for name in ordered_metric_names(ks)}, TIED_SHARE: float(tied_share(ranks))}
