"""Test a run's best checkpoint at every size and write test_metrics.json, test_mrl_metrics.json and
test_mrl_metrics_by_popularity.json (trainer/popularity.py)."""
import json
from pathlib import Path

import torch
import yaml

from trainer.evaluate import evaluate_ranks, metrics_from_ranks
from trainer.metrics import NonFiniteScoresError
from trainer.popularity import popularity_report, popularity_table, target_counts
from trainer.trainer import BEST_CHECKPOINT, STATE_DICT_KEY
from utils.io import write_json
from utils.report import metrics_table

POPULARITY_FILE = 'test_mrl_metrics_by_popularity'  # + suffix + '.json'


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


def load_checkpoint(path, map_location='cpu'):
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f'{path} does not exist: the run has no such checkpoint yet '
                              f'(train it first with train.py, or check --export_root).')
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # truncated or foreign file
        other = 'checkpoint-recent.pth' if path.name != 'checkpoint-recent.pth' else 'best_acc_model.pth'
        raise CheckpointError(f'{path} is corrupt or not a checkpoint ({type(error).__name__}: {error}). '
                              f'Restore it from a copy, fall back to models/{other} if that is intact, '
                              f'or retrain.') from None


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


def load_model_weights(model, checkpoint, path='checkpoint'):
    try:
        model.load_state_dict(checkpoint[STATE_DICT_KEY])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(f'{path} does not fit this configuration (different sizes, blocks, '
                              f'modalities or dataset?): {str(error).splitlines()[0]}') from None


def test_best(args, model, test_examples, export_root, device, progress=True, suffix='', *, training_examples):
    """Evaluate the best checkpoint on the test split; writes the three JSON files and returns the metrics.

    `training_examples`: (tokens, labels) of the run's training split, whose labels give each test
    target's popularity. `suffix` names the files of another protocol than the run's (e.g. '_masked'
    for test_mrl_metrics_masked.json when eval.py overrides --mask_history)."""
    export_root = Path(export_root)
    checkpoint_path = export_root / 'models' / BEST_CHECKPOINT
    checkpoint = load_checkpoint(checkpoint_path, device)
    load_model_weights(model, checkpoint, checkpoint_path)
    _, inputs, targets, histories = test_examples
    ranks = evaluate_ranks(model, inputs, targets, histories, len(args.mrl_hidden_sizes), args.test_batch_size,
                           device, args.mask_history, args.amp, progress=progress, description='test')
    try:
        return results_from_ranks(args, ranks, test_examples, training_examples, export_root, suffix)
    except NonFiniteScoresError as error:
        raise CheckpointError(non_finite_checkpoint_message(error, checkpoint_path, checkpoint[STATE_DICT_KEY])) from None


def results_from_ranks(args, ranks, test_examples, training_examples, export_root, suffix='', write=True):
    """{size: metrics} from the (M, U) test ranks; with `write`, the three JSON files. The popularity
    buckets split these same ranks, so they add up to the overall metrics."""
    sizes = list(args.mrl_hidden_sizes)
    by_size = {str(size): values for size, values in metrics_from_ranks(ranks, sizes, args.metric_ks).items()}
    if write:
        export_root = Path(export_root)
        targets = test_examples[2]
        report = popularity_report(ranks, sizes, args.metric_ks, target_counts(training_examples[1], targets),
                                   targets)
        write_json(export_root / f'test_mrl_metrics{suffix}.json', by_size)
        write_json(export_root / f'test_metrics{suffix}.json', by_size[str(sizes[-1])])
        write_json(export_root / f'{POPULARITY_FILE}{suffix}.json', report)
    return by_size


def read_run_config(export_root):
    path = Path(export_root) / 'args.yaml'
    if not path.exists():
        raise CheckpointError(f'{path} is missing: {export_root} is not a run folder made by train.py.')
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise CheckpointError(f'{path} is not valid YAML ({str(error).splitlines()[0]}): it was not written '
                              f'by train.py or has been edited. Restore it or start a new run.') from None
    if not isinstance(config, dict):
        raise CheckpointError(f'{path} is not a run configuration written by train.py.')
    return config


def print_table(by_size, title):
    print(f'\n{title}\n' + metrics_table(by_size))


def print_popularity_table(export_root, suffix=''):
    """Print the largest size's per-bucket table from the file results_from_ranks wrote."""
    path = Path(export_root) / f'{POPULARITY_FILE}{suffix}.json'
    report = json.loads(path.read_text())
    size = max(report['by_size'], key=int)
    print(f'\nSize {size} by target popularity (occurrences as a training target), {path.name}:\n'
          + popularity_table(report, size))
