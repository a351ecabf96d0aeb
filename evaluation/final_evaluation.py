"""The final evaluation: test a run's best checkpoint at every size and write the run folder's metrics
files (test_mrl_metrics.json, test_metrics.json, and by target popularity: evaluation/popularity.py).
Beside each size's metrics, the files give the share of test targets scored exactly like another
item (TIED_SHARE), whose metrics depend on the tie rule (docs/content_features.md, Ties)."""
import json

import torch

from evaluation.cold_start import cold_start_report, cold_start_table, cold_start_title
from evaluation.evaluate import evaluate_ranks, metrics_from_ranks
from evaluation.metrics import DEFAULT_TIES, TIED_SHARE, NonFiniteScoresError, tied_share
from evaluation.popularity import popularity_report, popularity_table, target_counts
from evaluation.sharded import sharded_ranks
from runs.run_folder import (STATE_DICT_KEY, CheckpointError, best_checkpoint_path, cold_start_path, load_best_weights,
                             popularity_path, write_test_metrics)
from runs.run_inputs import accepted_input_changes
from utils.report import metrics_table


def non_finite_names(named_tensors):
    """Names of the floating-point (or complex) tensors holding NaN or infinite values."""
    return [name for name, tensor in named_tensors.items()
            if torch.is_tensor(tensor) and (tensor.is_floating_point() or tensor.is_complex())
            and not bool(torch.isfinite(tensor).all())]


def non_finite_checkpoint_message(error, path, state_dict):
    """One line for a checkpoint whose scores are not finite (NonFiniteScoresError `error`)."""
    bad = non_finite_names(state_dict)
    weights = (f'its weights hold NaN or infinite values ({", ".join(bad[:3])}{", ..." if len(bad) > 3 else ""})'
               if bad else 'its weights are finite, so the frozen features or the scores overflow')
    return (f'{path}: {error}; {weights}. No metric was computed from them and no metrics file was written. '
            f'Test a checkpoint with finite weights, or retrain (a lower --lr or --max_grad_norm).')


def evaluate_best_checkpoint(args, model, test_examples, export_root, device, progress=True, suffix='', *,
                             training_examples, ties=DEFAULT_TIES, cold_start=None):
    """Evaluate the best checkpoint on the test split; writes the three JSON files and returns the metrics.

    `training_examples`: (tokens, labels) of the run's training split, whose labels give each test
    target's popularity. `suffix` names the files of another protocol than the run's (e.g. '_masked'
    for test_mrl_metrics_masked.json when eval.py overrides --mask_history); `ties`: how a target
    ranks among items scored exactly like it (evaluation/metrics.TIE_RULES); `cold_start`: the held-out
    items and the protocol (datasets/cold_start.cold_start_protocol), whose users get their own file."""
    checkpoint = load_best_weights(model, export_root, 'cpu')  # only the weights go on to the model's device
    _, inputs, targets, histories = test_examples
    ranks = evaluate_ranks(model, inputs, targets, histories, len(args.mrl_hidden_sizes), args.test_batch_size,
                           device, args.mask_history, args.amp, progress=progress, description='test')
    return _results_or_checkpoint_error(args, ranks, test_examples, training_examples, export_root, suffix,
                                        checkpoint, True, ties, cold_start)


def evaluate_best_checkpoint_sharded(args, model, test_examples, training_examples, device, group, cold_start=None):
    """evaluate_best_checkpoint with every rank evaluating its share of the users; the ranks of all
    users are gathered on every rank, and rank 0 writes the files (popularity buckets included)."""
    checkpoint = load_best_weights(model, args.export_root, 'cpu')  # copied to the model's device
    ranks = sharded_ranks(model, test_examples, len(args.mrl_hidden_sizes), args.test_batch_size, device, group,
                          args.mask_history, args.amp, 'test')
    return _results_or_checkpoint_error(args, ranks, test_examples, training_examples, args.export_root, '',
                                        checkpoint, group.is_main, cold_start=cold_start)


def _results_or_checkpoint_error(args, ranks, test_examples, training_examples, export_root, suffix, checkpoint,
                                 write, ties=DEFAULT_TIES, cold_start=None):
    try:
        return results_from_ranks(args, ranks, test_examples, training_examples, export_root, suffix, write, ties,
                                  cold_start)
    except NonFiniteScoresError as error:
        raise CheckpointError(non_finite_checkpoint_message(error, best_checkpoint_path(export_root),
                                                            checkpoint[STATE_DICT_KEY])) from None


def results_from_ranks(args, ranks, test_examples, training_examples, export_root, suffix='', write=True,
                       ties=DEFAULT_TIES, cold_start=None):
    """{size: metrics and TIED_SHARE} from the (M, U, 2) test ranks under the tie rule `ties`; with
    `write`, the three JSON files. The popularity buckets split these same ranks, so they add up to
    the overall metrics."""
    sizes = list(args.mrl_hidden_sizes)
    metrics = metrics_from_ranks(ranks, sizes, args.metric_ks, ties)
    shares = tied_share(ranks).tolist()
    by_size = {str(size): {**metrics[size], TIED_SHARE: share} for size, share in zip(sizes, shares)}
    if write:
        targets = test_examples[2]
        report = popularity_report(ranks, sizes, args.metric_ks, target_counts(training_examples[1], targets),
                                   targets, ties)
        cold = None if cold_start is None else cold_start_report(ranks, sizes, args.metric_ks, targets, cold_start, ties)
        write_test_metrics(export_root, by_size, report, suffix, accepted_input_changes(args), cold)
    return by_size


def print_table(by_size, title):
    print(f'\n{title}\n' + metrics_table(by_size))
    tied = {size: values[TIED_SHARE] for size, values in by_size.items() if values.get(TIED_SHARE)}
    if tied:  # the metrics of these targets are the tie rule's, not the model's order
        print('Test targets scored exactly like another item (docs/content_features.md, Ties): '
              + ', '.join(f'size {size} {100 * share:.1f}%' for size, share in tied.items()))


def print_popularity_table(export_root, suffix=''):
    """Print the largest size's per-bucket table from the file results_from_ranks wrote."""
    path = popularity_path(export_root, suffix)
    report = json.loads(path.read_text())
    size = max(report['by_size'], key=int)
    print(f'\nSize {size} by target popularity (occurrences as a training target), {path.name}:\n'
          + popularity_table(report, size))


def print_cold_start_table(export_root, suffix=''):
    """Print the cold-start file results_from_ranks wrote (every size), if it did."""
    path = cold_start_path(export_root, suffix)
    if path.exists():
        report = json.loads(path.read_text())
        print(f'\nCold start, {cold_start_title(report)}, {path.name}:\n' + cold_start_table(report))
