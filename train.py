"""Train fMRLRec once, validate every epoch, then test the best checkpoint at every nested size.

    python train.py --dataset_code demo
    python train.py --dataset_code beauty --data_root data --lru_dropout 0.6 --lru_attn_dropout 0.6
"""
import sys
from pathlib import Path

import torch

from config import parse_args
from trainer.setup import build_model, load_data, modality_name
from trainer.testing import load_checkpoint, print_table, read_run_config, test_best
from trainer.trainer import RECENT_CHECKPOINT, Trainer
from utils.io import write_yaml
from utils.runtime import resolve_device, set_seed

# Options that may differ between a run and its resumption without changing what is computed.
RESUMABLE_DIFFERENCES = {'resume', 'device', 'num_workers', 'use_wandb', 'use_tensorboard', 'data_root',
                         'image_root', 'export_root', 'feature_batch_size', 'compile'}


def config_dict(args):
    return {k: v for k, v in vars(args).items() if not k.startswith('resolved_')}


def prepare_run_folder(args):
    """Write args.yaml, refusing a folder that holds a different run's configuration."""
    root = Path(args.export_root)
    current = config_dict(args)
    if (root / 'args.yaml').exists():
        previous = read_run_config(root)
        differing = sorted(k for k in set(previous) | set(current)
                           if k not in RESUMABLE_DIFFERENCES and previous.get(k) != current.get(k))
        if differing:
            details = ', '.join(f'{k}: {previous.get(k)!r} -> {current.get(k)!r}' for k in differing[:6])
            raise SystemExit(f'{root} already holds a run with a different configuration ({details}). '
                             f'Choose another --export_root, or resume it with the same options.')
        if not args.resume and (root / 'models' / RECENT_CHECKPOINT).exists():
            raise SystemExit(f'{root} already holds a trained run. Continue it with --resume {root}, '
                             f'or choose another --export_root.')
    root.mkdir(parents=True, exist_ok=True)
    write_yaml(root / 'args.yaml', current)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.resume:
        if args.resume != 'auto':
            args.export_root = args.resume
    device = resolve_device(args.device)
    args.resolved_device = str(device)
    set_seed(args.seed)
    data, splits, features = load_data(args)
    print(f'{args.dataset_code}: {data.num_users} users, {data.num_items} items, '
          f'{data.num_interactions} interactions; features: {modality_name(args)}; device {device}')
    model = build_model(args, data.num_items, features).to(device)
    prepare_run_folder(args)
    trainer = Trainer(args, model, splits, args.export_root, device, config_dict(args))
    if args.compile:
        trainer.train_module = torch.compile(model)
    recent = Path(args.export_root) / 'models' / RECENT_CHECKPOINT
    if args.resume and recent.exists():
        trainer.load_state(load_checkpoint(recent, device))
        print(f'resumed {args.export_root} after epoch {trainer.epoch} (step {trainer.global_step})')
    print(f'run folder: {args.export_root}')
    trainer.fit()
    by_size = test_best(args, model, splits['test'], args.export_root, device)
    print_table(by_size, f'Test metrics of the best checkpoint (epoch {trainer.best_epoch}), every size:')
    print(f'\nwrote {Path(args.export_root) / "test_mrl_metrics.json"}')
    return by_size


if __name__ == '__main__':
    main()
