"""A score boost for new items, chosen on validation (docs/content_features.md, "New-item boost").

Under the cold-start protocol (datasets/cold_start.py) a hybrid scores an item it never trained on
with its projected features alone, while every trained item also gets its ID row: the new item
loses to trained ones even where its text matches. Adding one constant per size to the scores of
the items the run never trained on brings them back into the top ranks. The constant is a policy
(how much overall accuracy to spend on new items), so it is chosen on the validation split, whose
targets include the held-out items as new as at test: for each size, the largest boost on a grid
whose overall validation NDCG@10 stays within `tolerance` of the unboosted one. The test is then
ranked once with the chosen boosts, for all users and for those whose target is a held-out item.
"""
import torch

from evaluation.cold_start import cold_start_report
from evaluation.evaluate import evaluate_ranks, metrics_from_ranks
from evaluation.metrics import DEFAULT_TIES

BOOST_GRID = tuple(step / 4 for step in range(17))  # 0, 0.25, ..., 4: the scores' scale (a few units)
DEFAULT_TOLERANCE = 0.01
SELECTION_METRIC = 'NDCG@10'
DEFINITION = ('boost: a constant per size added to the scores of the held-out items (never trained on); chosen on '
              'validation as the largest on the grid whose overall validation NDCG@10 is at least (1 - tolerance) times '
              'the unboosted one; test metrics of all users and of the users whose target is held out')


def check_tolerance(tolerance):
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f'the tolerance is a share of the validation {SELECTION_METRIC} to give up, in [0, 1); '
                         f'got {tolerance}')


def choose_boosts(overall_by_boost, sizes, tolerance=DEFAULT_TOLERANCE, grid=BOOST_GRID):
    """{size: the largest boost of `grid` whose overall SELECTION_METRIC is at least (1 - tolerance)
    times the unboosted one}. overall_by_boost: one {size: metrics} per grid value; grid[0] must be 0."""
    check_tolerance(tolerance)
    if not grid or grid[0] != 0:
        raise ValueError(f'the boost grid must start at 0 (the unboosted scores), got {list(grid)[:3]}')
    chosen = {}
    for size in sizes:
        floor = (1 - tolerance) * overall_by_boost[0][size][SELECTION_METRIC]
        allowed = [boost for boost, metrics in zip(grid, overall_by_boost) if metrics[size][SELECTION_METRIC] >= floor]
        chosen[size] = max(allowed)
    return chosen


def _metrics(ranks, examples, sizes, ks, protocol, ties):
    """(overall {size: metrics}, held-out users' {size: metrics}) from (M, U, 2) ranks."""
    targets = examples[2]
    held_out = cold_start_report(ranks, sizes, ks, targets, protocol, ties)
    return metrics_from_ranks(ranks, sizes, ks, ties), held_out['by_size'], held_out['users']


def _ranks(model, examples, items, values, args, device, description):
    _, inputs, targets, histories = examples
    return evaluate_ranks(model, inputs, targets, histories, len(args.mrl_hidden_sizes), args.test_batch_size, device,
                          args.mask_history, args.amp, description=description, boost=(items, values))


def new_item_boost_report(args, model, validation, test, protocol, device, tolerance=DEFAULT_TOLERANCE,
                          boosts=None, ties=DEFAULT_TIES, grid=BOOST_GRID):
    """The JSON of test_mrl_metrics_new_item_boost.json. model: with the weights to test (eval mode);
    validation, test: the examples of datasets/p5.split_examples; protocol: the run's cold-start protocol,
    whose held-out items get the boost. boosts: {size: boost} to use as given; None chooses them on
    validation (choose_boosts), and the validation curve is kept in the report."""
    if protocol is None or protocol['items_in_training']:
        raise ValueError('a new-item boost needs items the run never trained on: a run trained with --cold_start')
    sizes = [int(size) for size in args.mrl_hidden_sizes]
    items = torch.as_tensor(protocol['held_out'], dtype=torch.long)
    report = {'definition': DEFINITION, 'metric': SELECTION_METRIC,
              'ties': ties, 'held_out_items': len(items)}
    if boosts is None:
        check_tolerance(tolerance)
        values = torch.tensor(grid, dtype=torch.float32)[:, None].expand(len(grid), len(sizes))
        ranks = _ranks(model, validation, items, values, args, device, 'validation, boosts')
        curve = [_metrics(ranks[row], validation, sizes, args.metric_ks, protocol, ties) for row in range(len(grid))]
        boosts = choose_boosts([overall for overall, _, _ in curve], sizes, tolerance, grid)
        report.update(tolerance=tolerance, grid=list(grid), validation={
            str(size): [{'boost': boost, 'all': overall[size][SELECTION_METRIC],
                         'held_out': held_out[str(size)][SELECTION_METRIC]}
                        for boost, (overall, held_out, _) in zip(grid, curve)] for size in sizes},
            validation_held_out_users=curve[0][2])
    missing = [size for size in sizes if size not in boosts]
    if missing:
        raise ValueError(f'no boost given for size(s) {missing}: give one per size {sizes}')
    values = torch.tensor([[float(boosts[size]) for size in sizes], [0.0] * len(sizes)])
    ranks = _ranks(model, test, items, values, args, device, 'test, boosted')
    boosted, boosted_held_out, users = _metrics(ranks[0], test, sizes, args.metric_ks, protocol, ties)
    plain, plain_held_out, _ = _metrics(ranks[1], test, sizes, args.metric_ks, protocol, ties)
    report['boosts'] = {str(size): float(boosts[size]) for size in sizes}
    report['test'] = {'all_users': len(test[2]), 'held_out_users': users, 'by_size': {
        str(size): {'boosted': {'all': boosted[size], 'held_out': boosted_held_out[str(size)]},
                    'unboosted': {'all': plain[size], 'held_out': plain_held_out[str(size)]}} for size in sizes}}
    return report


def boost_table(report, k=10):
    """Markdown: per size, the boost and NDCG@k / Recall@k of all users and of the held-out users, unboosted -> boosted."""
    names = (f'NDCG@{k}', f'Recall@{k}')
    lines = ['| size | boost | all: NDCG@10 | all: Recall@10 | held-out: NDCG@10 | held-out: Recall@10 |'.replace('10', str(k)),
             '|---:|---:|---:|---:|---:|---:|']
    for size, both in report['test']['by_size'].items():
        cells = []
        for group in ('all', 'held_out'):
            for name in names:
                before, after = both['unboosted'][group].get(name), both['boosted'][group].get(name)
                cells.append('–' if before is None or after is None else f'{before:.4f} → {after:.4f}')
        lines.append(f"| {size} | {report['boosts'][size]:g} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
