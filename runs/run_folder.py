"""The run folder: what a run writes where, and the one place that reads it back.

    RUN/args.yaml                         the run's options, written before training (run_config.py)
    RUN/inputs.json                       what the run was trained on: dataset, feature tables, preprocessing
                                          (its fingerprint, runs/input_fingerprint.py; docs/resume.md, "Inputs")
    RUN/environment.yaml, RUN/train.log   what ran where, and what was printed (utils/)
    RUN/models/best_acc_model.pth         the best epoch's weights (tested, exported)
    RUN/models/checkpoint-recent.pth      everything a resume needs; written last at each epoch end
    RUN/logs/logs.csv, RUN/tb/            per-epoch metrics (runs/loggers.py)
    RUN/test_metrics.json                 the largest size's test metrics
    RUN/test_mrl_metrics.json             {size: metrics} for every size
    RUN/test_mrl_metrics_by_popularity.json   the same ranks by target popularity (evaluation/popularity.py)
    RUN/.train.lock                       locked by the train.py that writes RUN (RunFolderLock)

A suffix ('_masked', '_unmasked') names the metrics files of another protocol than the run's.
Everything that writes or reads these files goes through the names and functions here.
"""
import json
import tempfile
from pathlib import Path

import torch
import yaml

from utils.io import DiskFullError, atomic_torch_save, remove_stale_temporaries, write_json, write_yaml

ARGS_FILE = 'args.yaml'
MODELS_DIR = 'models'
LOGS_DIR = 'logs'
LOG_FILE = 'logs.csv'  # in LOGS_DIR: one row per epoch
TENSORBOARD_DIR = 'tb'
BEST_CHECKPOINT = 'best_acc_model.pth'
RECENT_CHECKPOINT = 'checkpoint-recent.pth'
STATE_DICT_KEY = 'model_state_dict'  # the model's weights in either checkpoint
METRICS_FILE = 'test_mrl_metrics'  # + suffix + '.json': {size: metrics}
LARGEST_METRICS_FILE = 'test_metrics'  # + suffix + '.json': the largest size's metrics
POPULARITY_FILE = 'test_mrl_metrics_by_popularity'  # + suffix + '.json'
COLD_START_FILE = 'test_mrl_metrics_cold_start'  # + suffix + '.json': the cold-start protocol's users
NEW_ITEM_BOOST_FILE = 'test_mrl_metrics_new_item_boost.json'  # eval.py --new_item_boost (evaluation/new_item_boost.py)
INPUTS_FILE = 'inputs.json'
# In the metrics files of a test on inputs other than the run's (--accept_changed_inputs): what differed.
ACCEPTED_CHANGES_KEY = 'accepted_input_changes'


class RunFolderError(OSError):
    """--export_root cannot be created or written."""


class CheckpointError(RuntimeError):
    """A run folder, configuration or checkpoint that cannot be read or does not fit the model."""


def models_dir(root):
    return Path(root) / MODELS_DIR


def best_checkpoint_path(root):
    return models_dir(root) / BEST_CHECKPOINT


def recent_checkpoint_path(root):
    return models_dir(root) / RECENT_CHECKPOINT


def log_path(root):
    return Path(root) / LOGS_DIR / LOG_FILE


def tensorboard_dir(root):
    return Path(root) / TENSORBOARD_DIR


def metrics_path(root, suffix=''):
    return Path(root) / f'{METRICS_FILE}{suffix}.json'


def popularity_path(root, suffix=''):
    return Path(root) / f'{POPULARITY_FILE}{suffix}.json'


def cold_start_path(root, suffix=''):
    return Path(root) / f'{COLD_START_FILE}{suffix}.json'


def new_item_boost_path(root):
    return Path(root) / NEW_ITEM_BOOST_FILE


def find_runs(root):
    """Every run folder under `root` that holds a best checkpoint."""
    return sorted(p.parent.parent for p in Path(root).rglob(f'{MODELS_DIR}/{BEST_CHECKPOINT}'))


def find_tested_runs(root):
    """Every run folder under `root` that holds test metrics."""
    return [p.parent for p in sorted(Path(root).rglob(f'{METRICS_FILE}.json'))]


def read_saved_config(root):
    """The options saved in <root>/args.yaml, or None when the folder holds no run."""
    path = Path(root) / ARGS_FILE
    if not path.exists():
        return None
    try:
        saved = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        saved = error
    if not isinstance(saved, dict):
        raise CheckpointError(f'{path} is not a run configuration written by train.py ({saved}). '
                              f'Restore it, or choose another --export_root.')
    return saved


def read_run_config(root):
    """The options saved in <root>/args.yaml; CheckpointError when the folder holds no run."""
    saved = read_saved_config(root)
    if saved is None:
        raise CheckpointError(f'{Path(root) / ARGS_FILE} is missing: {root} is not a run folder made by train.py.')
    return saved


def read_test_metrics(root, suffix=''):
    """{size (a string): metrics} of the run's test, or None when it was not tested (without the
    note of accepted input changes: read_accepted_input_changes)."""
    path = metrics_path(root, suffix)
    if not path.exists():
        return None
    return {key: value for key, value in json.loads(path.read_text()).items() if key != ACCEPTED_CHANGES_KEY}


def read_accepted_input_changes(root, suffix=''):
    """What differed from the run's inputs when its metrics file was written (--accept_changed_inputs), [] when
    nothing did."""
    path = metrics_path(root, suffix)
    return json.loads(path.read_text()).get(ACCEPTED_CHANGES_KEY, []) if path.exists() else []


def write_test_metrics(root, by_size, popularity_report, suffix='', accepted_input_changes=(), cold_start_report=None):
    """The three metrics files: every size, the largest size, and every size by target popularity;
    and the cold-start protocol's (evaluation/cold_start.py) when there is one.
    `accepted_input_changes` (test inputs other than the run's, let through by --accept_changed_inputs)
    goes into each of them, so that no reader takes these numbers for the run's own."""
    largest = str(max(int(size) for size in by_size))
    note = {ACCEPTED_CHANGES_KEY: list(accepted_input_changes)} if accepted_input_changes else {}
    write_json(metrics_path(root, suffix), {**by_size, **note})
    write_json(Path(root) / f'{LARGEST_METRICS_FILE}{suffix}.json', {**by_size[largest], **note})
    write_json(popularity_path(root, suffix), {**popularity_report, **note})
    if cold_start_report is not None:
        write_json(cold_start_path(root, suffix), {**cold_start_report, **note})


def inputs_path(root):
    return Path(root) / INPUTS_FILE


def read_inputs_record(root):
    """RUN/inputs.json, the record of what the run was trained on, or None for a run from before such
    records; CheckpointError when it cannot be read."""
    path = inputs_path(root)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        record = error
    if not isinstance(record, dict) or not isinstance(record.get('dataset'), dict):
        raise CheckpointError(f'{path} is not a record of the run\'s inputs written by train.py ({record}). Restore '
                              f'it, or delete it to use the run without checking its inputs.')
    return record


def write_inputs_record(root, record):
    write_json(inputs_path(root), record)


def write_checkpoint(root, name, state, before_rename=None):
    """models/<name> (BEST_CHECKPOINT or RECENT_CHECKPOINT), replaced atomically: a reader sees the old file
    or the new one, never a part. `before_rename(tmp)` runs between the write and the rename (test faults)."""
    atomic_torch_save(state, models_dir(root) / name, before_rename=before_rename)


def torch_load(path, map_location='cpu'):
    """torch.load of a checkpoint this project wrote (not weights-only: it holds RNG states and plain
    values). Raises what torch raises for a truncated or foreign file."""
    return torch.load(path, map_location=map_location, weights_only=False)


def load_checkpoint(path, map_location='cpu'):
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f'{path} does not exist: the run has no such checkpoint yet '
                              f'(train it first with train.py, or check --export_root).')
    try:
        return torch_load(path, map_location)
    except Exception as error:  # truncated or foreign file
        other = RECENT_CHECKPOINT if path.name != RECENT_CHECKPOINT else BEST_CHECKPOINT
        raise CheckpointError(f'{path} is corrupt or not a checkpoint ({type(error).__name__}: {error}). '
                              f'Restore it from a copy, fall back to {MODELS_DIR}/{other} if that is intact, '
                              f'or retrain.') from None


def load_model_weights(model, checkpoint, path='checkpoint'):
    try:
        model.load_state_dict(checkpoint[STATE_DICT_KEY])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(f'{path} does not fit this configuration (different sizes, blocks, '
                              f'modalities or dataset?): {str(error).splitlines()[0]}') from None


def load_best_weights(model, root, map_location='cpu'):
    """Load the run's best checkpoint into `model`; returns the checkpoint."""
    path = best_checkpoint_path(root)
    checkpoint = load_checkpoint(path, map_location)
    load_model_weights(model, checkpoint, path)
    return checkpoint


def cannot_write(root, error):
    blocking = next((p for p in [Path(root), *Path(root).parents] if p.exists() and not p.is_dir()), None)
    reason = (f'{blocking} is a file, not a folder' if blocking is not None
              else f'{error.strerror or error} ({error.filename or root})')
    return RunFolderError(f'cannot write the run folder {root}: {reason}. Choose another --export_root, '
                          f'in a folder you can write.')


def check_run_folder_writable(root):
    """RunFolderError unless `root` can be created and written; leaves no trace (folders made for the
    probe are removed), so nothing is written before the data has been checked."""
    root = Path(root)
    created = []
    try:
        for folder in reversed([root, *root.parents]):
            if not folder.exists():
                folder.mkdir()
                created.append(folder)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as error:
        raise cannot_write(root, error) from None
    finally:
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:  # another process put something there meanwhile: leave it
                pass


def write_run_config(root, config):
    """Create the run folder, clear temporaries an interrupted write left, and write args.yaml."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for folder in (root, models_dir(root), root / LOGS_DIR):
            for name in remove_stale_temporaries(folder):
                print(f'removed {folder / name}, left by an interrupted write')
        write_yaml(root / ARGS_FILE, config)
    except DiskFullError:
        raise
    except OSError as error:  # e.g. a folder in /proc, or one made read-only since the probe
        raise cannot_write(root, error) from None
