"""Test metrics of the users whose test target is a held-out item of the cold-start protocol
(datasets/cold_start.py; docs/content_features.md, Cold start), beside the usual ones.

For a run trained with --cold_start those targets are items the model never trained on. eval.py can
also report the same users for a run trained on every item (`items_in_training` true): what the
same model kind reaches when it has seen those items, the upper bound of the cold-start numbers.
"""
from datasets.cold_start import held_out_mask
from evaluation.metrics import DEFAULT_TIES, check_tie_rule, subset_means

DEFINITION = ('users whose test target is one of the held-out items; the ranks are over the whole catalogue, '
              'as for every other user')


def cold_start_report(ranks, sizes, ks, targets, protocol, ties=DEFAULT_TIES):
    """The cold-start JSON: the protocol (datasets/cold_start.cold_start_protocol), the held-out items, the users whose
    target is one of them, and every size's metrics and share of tied targets over those users (null
    when there are none). ranks: (M, U, 2) as from evaluation.evaluate.evaluate_ranks; targets: (U,)."""
    held_out = protocol['held_out']
    check_tie_rule(ties)
    ranks, targets = ranks.cpu(), targets.cpu()
    if ranks.shape[1] != len(targets):
        raise ValueError(f'{ranks.shape[1]} ranks per size and {len(targets)} targets: one per test user')
    inside = held_out_mask(targets, held_out)
    users = int(inside.sum())
    by_size = {str(size): subset_means(ranks[row][inside], ks, ties) for row, size in enumerate(sizes)}
    return {
        'definition': DEFINITION,
        'share': float(protocol['share']), 'seed': int(protocol['seed']),
        'held_out_items': len(held_out),
        'held_out_item_ids': [int(i) for i in held_out],
        'items_in_training': bool(protocol['items_in_training']),
        'users': users, 'all_users': len(targets),
        'target_items': int(targets[inside].unique().numel()),
        'ties': ties,
        'by_size': by_size,
    }


def cold_start_table(report, k=10):
    """A markdown table: per size, NDCG@k and Recall@k of the held-out targets' users (k: the smallest
    evaluated cut-off when k was not evaluated)."""
    evaluated = next(iter(report['by_size'].values()))
    if f'NDCG@{k}' not in evaluated:
        k = min(int(name.split('@')[1]) for name in evaluated if '@' in name)
    lines = [f'| size | NDCG@{k} | Recall@{k} |', '|---:|---:|---:|']
    for size, values in report['by_size'].items():
        cells = ['–' if values.get(name) is None else f'{values[name]:.4f}' for name in (f'NDCG@{k}', f'Recall@{k}')]
        lines.append(f'| {size} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def cold_start_title(report):
    seen = 'trained on every item: the same users with their targets seen' if report['items_in_training'] else \
        'targets never seen in training'
    return (f"{report['users']:,} of {report['all_users']:,} test users whose target is one of the "
            f"{report['held_out_items']:,} held-out items ({100 * report['share']:g}%, seed {report['seed']}; {seen})")
