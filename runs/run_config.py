"""A run's configuration: the options a new, resumed or finished run has, read from its run folder.

`resume_arguments(argv)` turns a command line into the run's configuration (with --resume, the saved
options are the defaults); `prepare_run_folder` writes args.yaml, refusing a folder that holds another
run; `saved_run_args` gives a finished run's options (eval.py, export.py) with a few overrides.
"""
from pathlib import Path

from config import ConfigError, build_parser, expand_config, finalize, parse_args
from runs.run_folder import (ARGS_FILE, read_run_config, read_saved_config, recent_checkpoint_path,
                             write_inputs_record, write_run_config)
from utils.config_file import name_config_file
from utils.retired_options import without_retired

# Options that may differ between a run and its resumption without changing what is computed.
RESUMABLE_DIFFERENCES = {'resume', 'device', 'num_workers', 'use_wandb', 'use_tensorboard', 'data_root',
                         'feature_dir', 'image_root', 'export_root', 'feature_batch_size', 'compile',
                         'accept_changed_inputs', 'loss_item_chunk', 'threads'}
# Options of one command, never saved with the run: a resume must not accept changed inputs because an
# earlier one did (RUN/inputs.json keeps what was accepted).
COMMAND_ONLY = {'accept_changed_inputs'}


def config_dict(args):
    return {k: v for k, v in vars(args).items() if not k.startswith('resolved_') and k not in COMMAND_ONLY}


def with_new_defaults(saved):
    """A saved configuration with the options added since it was written set to their defaults,
    which are what that run computed with, and without the options retired since."""
    saved = without_retired(saved)
    defaults = vars(build_parser().parse_args([]))
    return {**{k: v for k, v in defaults.items() if k not in saved}, **saved}


def config_differences(previous, current):
    """'key: old -> new' for each option that changes what a run computes."""
    previous = with_new_defaults(previous)
    keys = sorted(k for k in set(previous) | set(current)
                  if k not in RESUMABLE_DIFFERENCES and previous.get(k) != current.get(k))
    return [f'{k}: {previous.get(k)!r} -> {current.get(k)!r}' for k in keys]


def resume_arguments(argv):
    """The configuration for `argv`. With --resume, the run's saved options are the defaults, so
    `--resume RUN` alone continues RUN as it was started; options given again (on the command line or
    in a --config file) must agree."""
    argv = expand_config(argv)  # the raw parsers below must see the file's options
    args = parse_args(argv)
    if not args.resume:
        if args.accept_changed_inputs:  # a new run has no inputs of its own yet to differ from
            raise ConfigError('--accept_changed_inputs goes with --resume: a new run records the inputs it starts on.')
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
        raise ConfigError(f'--resume {root}: no run there ({root / ARGS_FILE} is missing). Start the run '
                          f'without --resume, or use --resume auto --export_root {root}.')
    if args.resume != 'auto' and explicit_root is not None and Path(explicit_root).resolve() != root.resolve():
        raise ConfigError(f'--resume {root} continues that run in its own folder, but --export_root '
                          f'{explicit_root} names another. Drop --export_root, or use --resume auto '
                          f'--export_root {explicit_root} to continue (or start) the run there.')
    parser = build_parser()
    defaults = {k: v for k, v in without_retired(saved).items() if k not in ('resume', 'export_root', *COMMAND_ONLY)}
    if isinstance(defaults.get('mrl_hidden_sizes'), list):
        defaults['mrl_hidden_sizes'] = ','.join(str(s) for s in defaults['mrl_hidden_sizes'])
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    args.export_root = str(root)
    try:
        return finalize(args)
    except ConfigError as error:
        raise ConfigError(name_config_file(str(error), argv)) from None


def prepare_run_folder(args, write=True, lock=None):
    """Write args.yaml, refusing a folder that holds a different run's configuration. Under torchrun
    every rank checks (so that all stop together) and rank 0 alone writes. The writer first takes
    `lock` (run_lock.RunFolderLock), so that the folder is read and written by one train.py only."""
    root = Path(args.export_root)
    if write and lock is not None:
        lock.acquire()  # RunFolderBusyError when a live train.py writes this folder
    current = config_dict(args)
    previous = read_saved_config(root)
    if previous is not None:
        differing = config_differences(previous, current)
        if differing:
            raise SystemExit(f'{root} already holds a run with a different configuration '
                             f'({", ".join(differing[:6])}). Choose another --export_root, or resume it '
                             f'with the same options.')
        if not args.resume and recent_checkpoint_path(root).exists():
            raise SystemExit(f'{root} already holds a trained run. Continue it with --resume {root}, '
                             f'or choose another --export_root.')
    if write:
        write_run_config(root, current)
        record_inputs(args)


def record_inputs(args):
    """RUN/inputs.json, what the run trains on (runs/input_fingerprint.py): written when the run starts, and
    when a resume records a run from before such records or goes on with --accept_changed_inputs."""
    loaded = getattr(args, 'resolved_inputs', None)  # None: a configuration whose inputs were not loaded
    if loaded is not None and loaded.record_due:
        write_inputs_record(args.export_root, loaded.fingerprint)


def saved_run_args(export_root, overrides):
    """A finished run's saved configuration as a namespace, with `overrides` (None: keep) applied."""
    saved = without_retired(read_run_config(export_root))
    args = build_parser().parse_args([])
    for key, value in saved.items():
        setattr(args, key, value)
    args.mrl_hidden_sizes = ','.join(str(s) for s in saved['mrl_hidden_sizes'])
    args.export_root = str(export_root)
    for key, value in overrides.items():
        if value is not None:
            setattr(args, key, value)
    return finalize(args)
