"""Train fMRLRec once, validate every epoch, then test the best checkpoint at every nested size.

    python train.py --dataset_code demo
    python train.py --dataset_code beauty --data_root data --lru_dropout 0.6 --lru_attn_dropout 0.6
    python train.py --resume RUN                        # continue RUN with its own options
    python train.py --resume auto --export_root RUN ... # continue RUN if it exists, else start it
    torchrun --nproc_per_node=4 train.py ...            # DistributedDataParallel, one process per GPU
"""
import os
import sys
from pathlib import Path

import torch
import yaml

from config import ConfigError, build_parser, finalize, parse_args
from datasets.features import FeatureTableError
from datasets.p5 import DataError
from trainer.compile import check_compile, compile_for_training
from trainer.distributed import init_distributed, main_first, sharded_ranks, shutdown, wrap_model
from trainer.setup import build_model, load_data, modality_name
from trainer.testing import (CheckpointError, load_checkpoint, load_model_weights, print_popularity_table, print_table,
                             results_from_ranks, test_best)
from trainer.trainer import (BEST_CHECKPOINT, RECENT_CHECKPOINT, RESUME_KEYS, NonFiniteLossError, Trainer,
                             rank_seed)
from utils.io import remove_stale_temporaries, write_yaml
from utils.runtime import set_seed

# Options that may differ between a run and its resumption without changing what is computed.
RESUMABLE_DIFFERENCES = {'resume', 'device', 'num_workers', 'use_wandb', 'use_tensorboard', 'data_root',
                         'feature_dir', 'image_root', 'export_root', 'feature_batch_size', 'compile'}
# Errors that mean "fix your input": reported as one message, without a traceback.
USER_ERRORS = (ConfigError, DataError, FeatureTableError, CheckpointError)


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
    `--resume RUN` alone continues RUN as it was started; options given again must agree."""
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
    parser = build_parser()
    defaults = {k: v for k, v in saved.items() if k not in ('resume', 'export_root')}
    if isinstance(defaults.get('mrl_hidden_sizes'), list):
        defaults['mrl_hidden_sizes'] = ','.join(str(s) for s in defaults['mrl_hidden_sizes'])
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    args.export_root = str(root)
    return finalize(args)


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
    root.mkdir(parents=True, exist_ok=True)
    for folder in (root, root / 'models', root / 'logs'):
        for name in remove_stale_temporaries(folder):
            print(f'removed {folder / name}, left by an interrupted write')
    write_yaml(root / 'args.yaml', current)


def load_resume_state(trainer, path, current_config):
    """Restore `trainer` from the recent checkpoint at `path`, or say exactly what is wrong with it."""
    what_to_do = (f'Checkpoints are written atomically, so this is damage from outside training (disk, '
                  f'copy, another program). Restore the file, or delete it to restart the run from its '
                  f'first epoch with the same command.')
    try:
        # To the CPU: load_state_dict then copies the weights and the AdamW state to the parameters'
        # devices, and the RNG states must be CPU tensors (whatever device saved them).
        checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as error:  # truncated, foreign or unreadable file
        raise CheckpointError(f'cannot resume: {path} is corrupt or not a checkpoint '
                              f'({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}). '
                              f'{what_to_do}') from None
    missing = [key for key in RESUME_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise CheckpointError(f'cannot resume: {path} lacks {", ".join(missing)}; it is not a recent '
                              f'checkpoint of this project. {what_to_do}')
    differing = config_differences(checkpoint.get('config') or {}, current_config)
    if differing:
        raise CheckpointError(f'cannot resume: {path} was trained with another configuration '
                              f'({", ".join(differing[:6])}). Resume with the options it was trained with, '
                              f'or start a new run in another --export_root.')
    try:
        trainer.load_state(checkpoint)
    except (KeyError, RuntimeError, TypeError, ValueError) as error:
        raise CheckpointError(f'cannot resume: {path} does not fit this model '
                              f'({str(error).splitlines()[0]}). {what_to_do}') from None


def non_finite_report(error, trainer, root):
    models = Path(root) / 'models'
    if trainer.epoch:
        kept = (f'Nothing was saved after epoch {trainer.epoch}: {models / RECENT_CHECKPOINT} holds epoch '
                f'{trainer.epoch}, and best_acc_model.pth epoch {trainer.best_epoch} (test it with '
                f'`python eval.py --export_root {root}`).')
    else:
        kept = 'No epoch had completed, so there is no checkpoint.'
    return (f'Stopped: {error}. {kept} Resuming would replay the same steps; start a new run with a lower '
            f'--lr, a longer --warmup_steps or a smaller --max_grad_norm, and check the feature tables.')


def test_best_sharded(args, model, test_examples, training_examples, device, group):
    """test_best with every rank evaluating its share of the users; the ranks of all users are
    gathered on every rank, and rank 0 writes the files (popularity buckets included)."""
    root = Path(args.export_root)
    path = root / 'models' / BEST_CHECKPOINT
    load_model_weights(model, load_checkpoint(path, 'cpu'), path)  # copied to the model's device
    ranks = sharded_ranks(model, test_examples, len(args.mrl_hidden_sizes), args.test_batch_size, device, group,
                          args.mask_history, args.amp, 'test')
    return results_from_ranks(args, ranks, test_examples, training_examples, root, write=group.is_main)


def run(argv, group, device):
    args = resume_arguments(argv)
    say = print if group.is_main else (lambda *_, **__: None)
    args.resolved_device = str(device)
    check_compile(args.compile, device)
    set_seed(args.seed)
    # Rank 0 generates the demo or builds missing feature caches alone; the others then read them.
    data, splits, features = main_first(group, lambda: load_data(args))
    say(f'{args.dataset_code}: {data.num_users} users, {data.num_items} items, '
        f'{data.num_interactions} interactions; features: {modality_name(args)}; device {device}'
        + (f' x {group.world_size} processes' if group.enabled else ''))
    model = build_model(args, data.num_items, features).to(device)
    if group.rank > 0:
        set_seed(rank_seed(args.seed, group.rank))  # same initial weights, own dropout stream
    prepare_run_folder(args, write=group.is_main)
    group.barrier()
    trainer = Trainer(args, model, splits, args.export_root, device, config_dict(args), group)
    recent = Path(args.export_root) / 'models' / RECENT_CHECKPOINT
    if args.resume and recent.exists():
        load_resume_state(trainer, recent, config_dict(args))
        say(f'resumed {args.export_root} after epoch {trainer.epoch} (step {trainer.global_step})')
    trainer.train_module = wrap_model(model, group, device)
    if args.compile:
        trainer.train_module = compile_for_training(trainer.train_module)
    say(f'run folder: {args.export_root}')
    try:
        trainer.fit()
    except NonFiniteLossError as error:  # on every rank at the same step; rank 0 reports it
        raise SystemExit(non_finite_report(error, trainer, args.export_root) if group.is_main else 1) from None
    group.barrier()  # rank 0 has written the best checkpoint
    if group.enabled:
        by_size = test_best_sharded(args, model, splits['test'], splits['train'], device, group)
    else:
        by_size = test_best(args, model, splits['test'], args.export_root, device, training_examples=splits['train'])
    if group.is_main:
        print_table(by_size, f'Test metrics of the best checkpoint (epoch {trainer.best_epoch}), every size:')
        print_popularity_table(args.export_root)
    if device.type == 'cuda':
        say(f'peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB')
    say(f'\nwrote {Path(args.export_root) / "test_mrl_metrics.json"}')
    return by_size


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        group, device = init_distributed(parse_args(argv).device)
        try:
            return run(argv, group, device)
        finally:
            shutdown(group)
    except USER_ERRORS as error:  # under torchrun every rank stops; rank 0 says why
        raise SystemExit(f'error: {error}' if int(os.environ.get('RANK', '0')) == 0 else 1) from None


if __name__ == '__main__':
    main()
