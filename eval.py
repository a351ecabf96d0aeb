"""Evaluate finished runs at every nested size.

    python eval.py --export_root RUN              # test RUN's best checkpoint, write test_mrl_metrics.json
                                                  # and test_mrl_metrics_by_popularity.json
    python eval.py                                # every run under experiments/ that lacks the file
    python eval.py --export_root RUN --eval_mode plot   # PNG plots of each metric against size
    python eval.py --export_root RUN --eval_mode summary   # size_summary.md: metrics, parameters, file size
    python eval.py --export_root RUN --ties last  # targets behind the items scored exactly like them (the
                                                  # lower bound): test_mrl_metrics_ties_last.json; --ties first,
                                                  # ahead of them (the upper bound): *_ties_first.json
                                                  # (docs/content_features.md, Ties)
    python eval.py --export_root RUN --cold_start # a run trained on every item: the metrics of the users whose
                                                  # target a --cold_start run would hold out (the upper bound
                                                  # of that run's test_mrl_metrics_cold_start.json)
    python eval.py --export_root RUN --new_item_boost auto   # a --cold_start run: boost the held-out items' scores,
                                                  # by as much as validation allows (docs/content_features.md,
                                                  # New-item boost): test_mrl_metrics_new_item_boost.json

Testing also writes size_summary.md: per size, the metrics next to the size-s model's parameter
count and its export file's size (export.py), so that a user can pick the size that fits.
"""
import argparse
import math
import sys
from pathlib import Path

from utils.omp_policy import set_wait_policy  # before anything imports torch (utils/omp_policy.py)

set_wait_policy()

from config import EXPERIMENT_ROOT, ConfigError, str2bool
from datasets.cold_start import DEFAULT_SEED, DEFAULT_SHARE, cold_start_protocol
from datasets.features import FeatureTableError
from datasets.p5 import DataError
from deploy.catalogue import read_catalogue
from deploy.export_format import size_summary
from deploy.run_export import run_source
from evaluation.final_evaluation import (evaluate_best_checkpoint, print_cold_start_table, print_popularity_table,
                                         print_table)
from evaluation.metrics import DEFAULT_TIES, TIE_RULES
from evaluation.new_item_boost import DEFAULT_TOLERANCE, boost_table, check_tolerance, new_item_boost_report
from runs.run_config import saved_run_args
from runs.run_folder import (CheckpointError, find_runs, metrics_path, new_item_boost_path, read_run_config,
                             read_test_metrics)
from runs.run_inputs import build_model, checked_held_out_items, load_data, run_cold_start
from runs.trained_run import load_trained_run
from utils.io import DiskFullError, atomic_write_text, write_json
from utils.plots import plot_metrics_by_size
from utils.runtime import DeviceError, automatic_threads, cpu_threads, resolve_device, torch_threads
from utils.thread_governor import governed

# What stops an evaluation with one line: a bad run folder, checkpoint (NaN weights included), data,
# feature table, device or option, or a full disk (the files written before are intact).
USER_ERRORS = (CheckpointError, DataError, FeatureTableError, DeviceError, ConfigError, DiskFullError)
INTERRUPTED_STATUS = 130  # the shell's status for a process stopped by SIGINT (as train.py)


def parse_eval_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--export_root', type=str, default=None, help='a run folder made by train.py')
    p.add_argument('--experiments_root', type=str, default=EXPERIMENT_ROOT,
                   help='where to look for runs when --export_root is not given')
    p.add_argument('--eval_mode', type=str, default='test', choices=['test', 'plot', 'summary'])
    p.add_argument('--data_root', type=str, default=None, help="override the run's --data_root")
    p.add_argument('--device', type=str, default='auto')
    p.add_argument('--mask_history', type=str2bool, nargs='?', const=True, default=None,
                   help="override the run's --mask_history")
    p.add_argument('--force', action='store_true', help='re-evaluate runs that already have results')
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0: OMP_NUM_THREADS when set, else the '
                   'cores this process may use)')
    p.add_argument('--accept_changed_inputs', action='store_true',
                   help='test although the dataset or a feature table differs from what the run was trained on '
                        '(RUN/inputs.json); said on standard error and in the metrics files')
    p.add_argument('--ties', choices=TIE_RULES, default=DEFAULT_TIES,
                   help='how a target ranks among items scored exactly like it: expected (the default, as in '
                        'training: the mean over a random order of the tied items), first (ahead of them, the '
                        'upper bound) or last (behind them, the lower bound); first and last with --eval_mode '
                        'test, writing *_ties_first.json / *_ties_last.json files')
    p.add_argument('--cold_start', action='store_true',
                   help='also report the users whose test target is one of the items a --cold_start run holds out '
                        "(a run trained with --cold_start reports them anyway, with its own items); written to "
                        'test_mrl_metrics_cold_start.json (docs/content_features.md, Cold start)')
    p.add_argument('--cold_start_share', type=float, default=None,
                   help=f'with --cold_start, on a run trained on every item: the share held out '
                        f'(default {DEFAULT_SHARE})')
    p.add_argument('--cold_start_seed', type=int, default=None,
                   help=f'with --cold_start, on a run trained on every item: the seed (default {DEFAULT_SEED})')
    p.add_argument('--new_item_boost', type=str, default=None,
                   help='a run trained with --cold_start: also test with a constant added to the scores of its held-out '
                        'items, "auto" (per size, the largest that keeps the overall validation NDCG@10 within '
                        '--new_item_tolerance) or one value, or one per size (comma-separated); written to '
                        'test_mrl_metrics_new_item_boost.json (docs/content_features.md, New-item boost)')
    p.add_argument('--new_item_tolerance', type=float, default=DEFAULT_TOLERANCE,
                   help='with --new_item_boost auto: the share of the overall validation NDCG@10 the boost may give up')
    options = p.parse_args(argv)
    if options.new_item_boost is not None:
        try:
            parse_boosts(options.new_item_boost)
            check_tolerance(options.new_item_tolerance)
        except ValueError as error:
            p.error(f'--new_item_boost: {error}')
        if options.ties != DEFAULT_TIES or options.mask_history is not None or options.eval_mode != 'test':
            p.error('--new_item_boost tests under the run\'s own protocol: use it with --eval_mode test, without '
                    '--ties and --mask_history')
    if (options.cold_start_share is not None or options.cold_start_seed is not None) and not options.cold_start:
        p.error('--cold_start_share and --cold_start_seed choose the items of --cold_start; add --cold_start')
    if options.cold_start_share is not None and not 0.0 < options.cold_start_share < 1.0:
        p.error(f'--cold_start_share must be in (0, 1), got {options.cold_start_share}')
    if options.threads < 0:
        p.error(f'--threads must be 0 (automatic) or a positive number, got {options.threads}')
    if options.ties != DEFAULT_TIES and options.eval_mode != 'test':
        p.error(f'--ties {options.ties} writes its own test files: use it with --eval_mode test')
    return options


def evaluate_run(export_root, options):
    export_root = Path(export_root)
    if options.eval_mode == 'plot':
        if not metrics_path(export_root).exists() or options.force:
            evaluate_run(export_root, argparse.Namespace(**{**vars(options), 'eval_mode': 'test'}))
        by_size = read_test_metrics(export_root)
        for path in plot_metrics_by_size(by_size, export_root / 'plots', export_root.name):
            print(f'wrote {path}')
        return by_size
    if options.eval_mode == 'summary':
        if not metrics_path(export_root).exists() or options.force:
            return evaluate_run(export_root, argparse.Namespace(**{**vars(options), 'eval_mode': 'test'}))
        args, data, model = load_trained_run(export_root, options.data_root, options.accept_changed_inputs)
        by_size = read_test_metrics(export_root)
        write_size_summary(export_root, args, data, model, by_size)
        return by_size
    args = saved_run_args(export_root, {'data_root': options.data_root, 'mask_history': options.mask_history,
                                        'accept_changed_inputs': options.accept_changed_inputs or None})
    device = resolve_device(options.device)
    args.resolved_device = str(device)
    data, splits, features = load_data(args, trained_run=True)  # checked against RUN/inputs.json
    model = build_model(args, data.num_items, features).to(device)
    # Another protocol than the run's goes to its own files, e.g. test_mrl_metrics_masked.json.
    run_masks = bool(read_run_config(export_root).get('mask_history', False))
    suffix = '' if args.mask_history == run_masks else ('_masked' if args.mask_history else '_unmasked')
    ties = getattr(options, 'ties', DEFAULT_TIES)
    suffix += '' if ties == DEFAULT_TIES else f'_ties_{ties}'  # the run's own files keep the training's rule
    cold_start = evaluation_cold_start(args, options, splits, data.num_items)
    boosts = new_item_boosts(args, options, cold_start)  # checked before the test runs
    by_size = evaluate_best_checkpoint(args, model, splits['test'], export_root, device, suffix=suffix,
                                       training_examples=splits['train'], ties=ties, cold_start=cold_start)
    protocol = ('history masked' if args.mask_history else 'history not masked') + (
        '' if ties == DEFAULT_TIES else f', targets {ties} among equal scores')
    print_table(by_size, f'{export_root}: test metrics ({protocol}), every size')
    print_popularity_table(export_root, suffix)
    print_cold_start_table(export_root, suffix)
    if boosts is not None:
        report_new_item_boost(args, options, model, splits, cold_start, device, boosts)
    if suffix:
        print(f'wrote {metrics_path(export_root, suffix)}')
    else:
        write_size_summary(export_root, args, data, model, by_size)
    return by_size


def parse_boosts(text):
    """'auto' -> None (chosen on validation); '1.5' -> [1.5] (every size); '0,0.5,1' -> one per size."""
    if text == 'auto':
        return None
    try:
        values = [float(part) for part in text.split(',')]
    except ValueError:
        raise ValueError(f'{text!r} is neither "auto" nor numbers separated by commas') from None
    if not all(math.isfinite(value) for value in values):
        raise ValueError(f'{text!r}: the boosts must be finite numbers')
    return values


def new_item_boosts(args, options, protocol):
    """None without --new_item_boost; else {size: boost}, or 'auto' (chosen on validation). ConfigError when the
    run has no item it never trained on, or the values do not fit its sizes."""
    if getattr(options, 'new_item_boost', None) is None:
        return None
    if protocol is None or protocol['items_in_training']:
        raise ConfigError(f'--new_item_boost boosts the items a run never trained on, but {args.export_root} was '
                          f'trained on every item: use it on a run trained with --cold_start')
    sizes, values = list(args.mrl_hidden_sizes), parse_boosts(options.new_item_boost)
    if values is None:
        return 'auto'
    if len(values) not in (1, len(sizes)):
        raise ConfigError(f'--new_item_boost: {len(values)} values for the {len(sizes)} sizes {sizes}: give one, '
                          f'or one per size')
    return dict(zip(sizes, values * len(sizes) if len(values) == 1 else values))


def report_new_item_boost(args, options, model, splits, protocol, device, boosts):
    """Write and print the new-item boost report (evaluation/new_item_boost.py) of a --cold_start run."""
    chosen = boosts == 'auto'
    report = new_item_boost_report(args, model, splits['val'], splits['test'], protocol, device,
                                   options.new_item_tolerance, None if chosen else boosts)
    path = new_item_boost_path(args.export_root)
    write_json(path, report)
    print(f'\nNew-item boost ({"chosen on validation" if chosen else "as given"}): '
          f'{report["test"]["held_out_users"]:,} of {report["test"]["all_users"]:,} test users have a held-out target; '
          f'unboosted -> boosted\n' + boost_table(report))
    print(f'wrote {path}')


def evaluation_cold_start(args, options, splits, num_items):
    """The cold-start protocol to report (datasets/cold_start.py): the run's own, or with --cold_start on
    a run trained on every item, the items such a run would hold out; None when neither."""
    own = run_cold_start(args, splits)
    share, seed = getattr(options, 'cold_start_share', None), getattr(options, 'cold_start_seed', None)
    if own is not None:
        if (share is not None and share != own['share']) or (seed is not None and seed != own['seed']):
            raise ConfigError(f'{args.export_root} was trained with --cold_start_share {own["share"]} '
                              f'--cold_start_seed {own["seed"]}: its held-out items are those; drop '
                              f'--cold_start_share and --cold_start_seed')
        return own
    if not getattr(options, 'cold_start', False):
        return None
    share = DEFAULT_SHARE if share is None else share
    seed = DEFAULT_SEED if seed is None else seed
    return cold_start_protocol(checked_held_out_items(num_items, share, seed), share, seed, items_in_training=True)


def write_size_summary(export_root, args, data, model, by_size):
    """Write and print size_summary.md: metrics, parameters and export file size per size."""
    catalogue = read_catalogue(data.data_dir, data.id2item, data.num_items)
    table = size_summary(model.cpu().eval(), catalogue, args.lru_max_len, by_size, run_source(export_root, args))
    path = Path(export_root) / 'size_summary.md'
    atomic_write_text(path, f'# {Path(export_root).name}: quality, parameters and export size by model size\n\n'
                            f'{table}\n')
    print(f'\nPer size (parameters of the nested slice; export file with the precomputed item table):\n{table}')
    print(f'wrote {path}')


def main(argv=None):
    options = parse_eval_args(sys.argv[1:] if argv is None else argv)
    try:
        threads = cpu_threads(options.threads)
        with torch_threads(threads), governed(threads, automatic_threads(options.threads)):
            return evaluate_runs(options)
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's status, as train.py
        print('interrupted (Ctrl-C); every file eval.py writes is replaced whole, so the run being tested keeps its '
              'earlier metrics files, if any. Run the same command again to finish.', file=sys.stderr)
        raise SystemExit(INTERRUPTED_STATUS) from None


def evaluate_runs(options):
    """Evaluate --export_root, or every run under --experiments_root that needs it."""
    if options.export_root:
        try:
            return evaluate_run(options.export_root, options)
        except USER_ERRORS as error:
            raise SystemExit(f'error: {error.strerror if isinstance(error, DiskFullError) else error}') from None
    runs = [r for r in find_runs(options.experiments_root)
            if options.force or options.eval_mode in ('plot', 'summary') or not metrics_path(r).exists()]
    if not runs:
        print(f'no run under {options.experiments_root}/ needs evaluation (use --force to redo)')
    for run in runs:
        try:
            evaluate_run(run, options)
        except USER_ERRORS + (SystemExit,) as error:
            print(f'skipping {run}: {error}')


if __name__ == '__main__':
    main()
