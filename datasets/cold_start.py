"""The cold-start protocol (docs/content_features.md, Cold start): items that exist only after training.

With `--cold_start`, a seeded random share of the catalogue (`--cold_start_share`, default 5 %) is
held out of training entirely, as if those items were added to the catalogue after the model was
trained:
- they are removed from every user's training sequence, so they are never a training input or label
  (a user whose training sequence was all held-out items trains on nothing);
- the training softmax does not see them either (model/fmrlrec.py `exclude_from_training`): an item
  that does not exist yet cannot be a negative, and a hybrid's ID row of one stays zero, which is what
  an item added to a deployed model gets (add_items.py);
- validation and test keep every user and their full histories, held-out items included, and rank
  the whole catalogue. The test metrics are reported as usual and, beside them, for the users whose
  test target is a held-out item (test_mrl_metrics_cold_start.json).

The held-out items depend only on the catalogue size, the share and `--cold_start_seed` (not on
the training seed), so runs of different kinds and seeds hold out the same items.
"""
import torch

DEFAULT_SHARE = 0.05
DEFAULT_SEED = 0


def add_cold_start_options(group, add_bool):
    """The protocol's options, in the argparse `group`; `add_bool(group, name, default, help)` makes
    a --flag/--no-flag boolean (config.py)."""
    add_bool(group, 'cold_start', False, 'hold a seeded share of the items out of training entirely and report '
             'the test metrics of the users whose target is one of them (docs/content_features.md, Cold start)')
    group.add_argument('--cold_start_share', type=float, default=DEFAULT_SHARE,
                       help='with --cold_start: the share of the items held out of training')
    group.add_argument('--cold_start_seed', type=int, default=DEFAULT_SEED,
                       help='with --cold_start: the seed that picks the held-out items (not --seed: runs of '
                            'every kind and seed hold out the same items)')


def cold_start_problem(args):
    """None, or why the cold-start options do not fit together (one line)."""
    if not 0.0 < args.cold_start_share < 1.0:
        return f'--cold_start_share must be in (0, 1), got {args.cold_start_share}'
    changed = [f'--{name}' for name, default in (('cold_start_share', DEFAULT_SHARE), ('cold_start_seed', DEFAULT_SEED))
               if getattr(args, name) != default]
    if changed and not args.cold_start:
        verb = 'choose' if len(changed) > 1 else 'chooses'
        return f'{" and ".join(changed)} {verb} the held-out items of --cold_start, which is off; add --cold_start'
    return None


def held_out_items(num_items, share, seed):
    """(K,) sorted item ids (1..num_items) held out: K = round(share * num_items), at least 1."""
    count = max(1, round(share * num_items))
    if count >= num_items:
        raise ValueError(f'--cold_start_share {share} would hold out all {num_items} items')
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randperm(num_items, generator=generator)[:count].sort().values + 1


def without_items(sequences, items):
    """user -> sequence with `items` removed; users left with nothing are dropped."""
    removed = set(int(i) for i in items)
    kept = {user: [i for i in sequence if i not in removed] for user, sequence in sequences.items()}
    return {user: sequence for user, sequence in kept.items() if sequence}


def held_out_mask(targets, items):
    """(U,) bool: whose target is one of `items`."""
    return torch.isin(targets.long().cpu(), items.long().cpu())


def cold_start_protocol(held_out, share, seed, items_in_training=False):
    """The protocol a report needs: the (K,) held-out items, how they were chosen, and whether the
    model was trained on them (eval.py --cold_start on a run trained on every item)."""
    return {'held_out': held_out, 'share': share, 'seed': seed, 'items_in_training': items_in_training}
