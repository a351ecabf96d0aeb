"""Test metrics split by the popularity of the target item: how often it occurs as a training target.

A target's count is its number of occurrences among the labels of the training examples
(datasets/p5.py `training_examples`): every user's sequence without its last two items (the
validation and test targets), of which at most the last `lru_max_len` items, summed over all users.
These are exactly the items the loss is computed on. Buckets of that count: `0` (never a training
target), `1-4`, `5-19`, `20+`. The bucket metrics are computed from the same ranks, under the same
tie rule, as the overall metrics, so their user-weighted mean is the overall metric (and likewise
for each bucket's share of tied targets).
"""
import torch

from evaluation.metrics import DEFAULT_TIES, check_tie_rule, subset_means

# (name, lowest count, highest count or None for no bound); together they cover 0, 1, 2, ...
BUCKETS = (('0', 0, 0), ('1-4', 1, 4), ('5-19', 5, 19), ('20+', 20, None))
DEFINITION = ('bucket = occurrences of the test target among the training targets of all users '
              '(each sequence without its last two items, at most its last lru_max_len of them)')


def training_counts(train_labels, num_items):
    """(num_items + 1,) occurrences of each item id among the training labels (0 = padding, not counted)."""
    labels = train_labels[train_labels > 0].long()
    if len(labels) and int(labels.max()) > num_items:
        raise ValueError(f'training label {int(labels.max())} is outside 1..{num_items}: the examples and '
                         f'the item count do not belong together.')
    return torch.bincount(labels, minlength=num_items + 1)


def target_counts(train_labels, targets):
    """(U,) how often each user's test target occurs among the training labels."""
    targets = targets.long().cpu()
    num_items = max([0] + [int(t.max()) for t in (train_labels, targets) if t.numel()])
    return training_counts(train_labels.cpu(), num_items)[targets]


def bucket_indices(counts):
    """(U,) index into BUCKETS of each count."""
    index = torch.full_like(counts, -1)
    for position, (_, low, high) in enumerate(BUCKETS):
        inside = counts >= low if high is None else (counts >= low) & (counts <= high)
        index[inside] = position
    if (index < 0).any():
        raise ValueError(f'count {int(counts[index < 0][0])} falls in no popularity bucket (negative?)')
    return index


def popularity_report(ranks, sizes, ks, counts, targets, ties=DEFAULT_TIES):
    """The by-popularity JSON: bucket bounds, the tie rule, users and distinct target items per
    bucket, and every size's metrics and share of tied targets per bucket. ranks: (M, U, 2) as from
    evaluation.evaluate.evaluate_ranks; counts, targets: (U,); ties: evaluation/metrics.TIE_RULES.
    An empty bucket has users 0 and null metrics (JSON has no NaN)."""
    check_tie_rule(ties)
    ranks, counts, targets = ranks.cpu(), counts.cpu(), targets.cpu()
    if ranks.shape[1] != len(counts) or len(counts) != len(targets):
        raise ValueError(f'{ranks.shape[1]} ranks per size, {len(counts)} counts and {len(targets)} targets: '
                         f'they must be one per test user.')
    index = bucket_indices(counts)
    members = {name: index == position for position, (name, _, _) in enumerate(BUCKETS)}
    by_size = {}
    for row, size in enumerate(sizes):
        by_size[str(size)] = {}
        for bucket, inside in members.items():
            by_size[str(size)][bucket] = subset_means(ranks[row][inside], ks, ties)
    return {
        'definition': DEFINITION,
        'buckets': {name: [low, high] for name, low, high in BUCKETS},
        'ties': ties,
        'users': {bucket: int(inside.sum()) for bucket, inside in members.items()},
        'items': {bucket: len(torch.unique(targets[inside])) for bucket, inside in members.items()},
        'by_size': by_size,
    }


def popularity_table(report, size=None, k=10):
    """A markdown table of one size (default: the largest): bucket, users, NDCG@k, Recall@k
    (k = the smallest evaluated cut-off when k was not evaluated)."""
    size = str(size) if size is not None else max(report['by_size'], key=int)
    evaluated = next(iter(report['by_size'][size].values()))
    if f'NDCG@{k}' not in evaluated:
        k = min(int(name.split('@')[1]) for name in evaluated if '@' in name)  # not TIED_SHARE
    columns = [f'NDCG@{k}', f'Recall@{k}']
    lines = ['| bucket | users | ' + ' | '.join(columns) + ' |', '|---|---:|' + '---:|' * len(columns)]
    for bucket, values in report['by_size'][size].items():
        cells = ['–' if values[c] is None else f'{values[c]:.4f}' for c in columns]
        lines.append(f'| {bucket} | {report["users"][bucket]} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
