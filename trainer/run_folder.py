"""The run folder: which configuration a (resumed) run has, and whether its folder can hold it.

`resume_arguments(argv)` turns a command line into the run's configuration (with --resume, the saved
options are the defaults); `check_run_folder_writable` probes --export_root before any data is read;
`prepare_run_folder` writes args.yaml, refusing a folder that holds another run.
"""
import tempfile
from pathlib import Path

import yaml

from config import ConfigError, build_parser, expand_config, finalize, parse_args
from trainer.testing import CheckpointError
from trainer.trainer import RECENT_CHECKPOINT
from utils.io import DiskFullError, remove_stale_temporaries, write_yaml

# Options that may differ between a run and its resumption without changing what is computed.
RESUMABLE_DIFFERENCES = {'resume', 'device', 'num_workers', 'use_wandb', 'use_tensorboard', 'data_root',
                         'feature_dir', 'image_root', 'export_root', 'feature_batch_size', 'compile'}


class RunFolderError(OSError):
    """--export_root cannot be created or written."""


def config_dict(args):
    return {k: v for k, v in vars(args).items() if not k.startswith('resolved_')}


def with_new_defaults(saved):
    """A saved configuration with the options added since it was written set to their defaults,
    which are what that run computed with."""
    defaults = vars(build_parser().parse_args([]))
    return {**{k: v for k, v in defaults.items() if k not in saved}, **saved}


def config_differences(previous, current):
    """'key: old -> new' for each option that changes what a run computes."""
    previous = with_new_defaults(previous)
    keys = sorted(k for k in set(previous) | set(current)
                  if k not in RESUMABLE_DIFFERENCES and previous.get(k) != current.get(k))
    return [f'{k}: {previous.get(k)!r} -> {current.get(k)!r}' for k in keys]


def read_saved_config(root):
    """The options saved in <root>/args.yaml, or None when the folder holds no run."""
    path = Path(root) / 'args.yaml'
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


def resume_arguments(argv):
    """The configuration for `argv`. With --resume, the run's saved options are the defaults, so
    `--resume RUN` alone continues RUN as it was started; options given again (on the command line or
    in a --config file) must agree."""
    argv = expand_config(argv)  # the raw parsers below must see the file's options
    args = parse_args(argv)
    if not args.resume:
        return args
    explicit_root = build_parser().parse_args(argv).export_root
    if args.resume == 'auto':
        if explicit_root is None:
            raise ConfigError('--resume auto continues the run in --export_root: give --export_root.')
        root = Path(explicit_root)
    else:
        root = Path(args.resume)
    saved = read_saved_config(root)
    if saved is None:
        if args.resume == 'auto':  # the first attempt of a restartable job: start the run
            print(f'--resume auto: no run in {root} yet; starting it.')
            args.export_root = str(root)
            return args
        raise ConfigError(f'--resume {root}: no run there ({root / "args.yaml"} is missing). Start the run '
                          f'without --resume, or use --resume auto --export_root {root}.')
    if args.resume != 'auto' and explicit_root is not None and Path(explicit_root).resolve() != root.resolve():
        raise ConfigError(f'--resume {root} continues that run in its own folder, but --export_root '
                          f'{explicit_root} names another. Drop --export_root, or use --resume auto '
                          f'--export_root {explicit_root} to continue (or start) the run there.')
    parser = build_parser()
    defaults = {k: v for k, v in saved.items() if k not in ('resume', 'export_root')}
    if isinstance(defaults.get('mrl_hidden_sizes'), list):
        defaults['mrl_hidden_sizes'] = ','.join(str(s) for s in defaults['mrl_hidden_sizes'])
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    args.export_root = str(root)
    return finalize(args)


def _cannot_write(root, error):
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
        raise _cannot_write(root, error) from None
    finally:
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:  # another process put something there meanwhile: leave it
                pass


def prepare_run_folder(args, write=True):
    """Write args.yaml, refusing a folder that holds a different run's configuration. Under torchrun
    every rank checks (so that all stop together) and rank 0 alone writes."""
    root = Path(args.export_root)
    current = config_dict(args)
    previous = read_saved_config(root)
    if previous is not None:
        differing = config_differences(previous, current)
        if differing:
            raise SystemExit(f'{root} already holds a run with a different configuration '
                             f'({", ".join(differing[:6])}). Choose another --export_root, or resume it '
                             f'with the same options.')
        if not args.resume and (root / 'models' / RECENT_CHECKPOINT).exists():
            raise SystemExit(f'{root} already holds a trained run. Continue it with --resume {root}, '
                             f'or choose another --export_root.')
    if not write:
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        for folder in (root, root / 'models', root / 'logs'):
            for name in remove_stale_temporaries(folder):
                print(f'removed {folder / name}, left by an interrupted write')
        write_yaml(root / 'args.yaml', current)
    except DiskFullError:
        raise
    except OSError as error:  # e.g. a folder in /proc, or one made read-only since the probe
        raise _cannot_write(root, error) from None
