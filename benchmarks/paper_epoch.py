"""The epoch users wait for: one training epoch and one validation pass at the paper's configuration,
timed end to end on a real dataset's sequences.

    python benchmarks/paper_epoch.py --data_root ../shared/data/amazon            # Beauty, a table
    python benchmarks/paper_epoch.py --data_root ../shared/data/amazon --json     # one JSON object

The paper's configuration: 2 blocks, sizes 8..1024, batch 32, a 1024-d text and a 1024-d image
feature table. The real encoders' tables need their models (and the images), which are not
available offline, so synthetic L2-normalised 1024-d tables of the catalogue's size stand in: the
time depends on their shape, not on their values. The sequences are the dataset's own, read in
place by the project's loader (datasets/p5.py), and the epoch and the validation are
Trainer.train_epoch and Trainer.validate, what train.py runs (its default options otherwise).
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python benchmarks/paper_epoch.py` runs from anywhere

from benchmarks.hardware import hardware  # noqa: E402  (after the path set-up)
from benchmarks.synthetic import PAPER_SIZES, feature_table  # noqa: E402
from config import parse_args  # noqa: E402
from datasets.p5 import load_p5, split_examples  # noqa: E402
from model.fmrlrec import FMRLRec  # noqa: E402
from trainer.trainer import Trainer  # noqa: E402


def first_users(splits, users):
    """The splits cut to the first `users` training sequences and validation users (a quick check)."""
    tokens, labels = splits['train']
    return dict(splits, train=(tokens[:users], labels[:users]), val=tuple(part[:users] for part in splits['val']))


def run_epoch(options, export_root):
    args = parse_args(['--dataset_code', options.dataset_code, '--data_root', options.data_root,
                       '--export_root', str(export_root), '--lru_num_blocks', '2', '--mrl_hidden_sizes', options.sizes,
                       '--amp', options.amp, '--num_epochs', '1', '--device', options.device])
    device = torch.device(options.device)
    times = {}
    started = time.perf_counter()
    data = load_p5(Path(options.data_root) / options.dataset_code)
    splits = split_examples(data, args.lru_max_len)
    if options.users:
        splits = first_users(splits, options.users)
    generator = torch.Generator().manual_seed(0)
    text, image = (feature_table(data.num_items, options.feature_dim, generator) for _ in range(2))
    times['load_seconds'] = time.perf_counter() - started
    torch.manual_seed(args.seed)
    model = FMRLRec(data.num_items, args.mrl_hidden_sizes, text, image, num_blocks=args.lru_num_blocks,
                    dropout=args.lru_dropout, attn_dropout=args.lru_attn_dropout, r_min=args.lru_r_min,
                    r_max=args.lru_r_max, bias=args.lru_use_bias).to(device)
    trainer = Trainer(args, model, splits, export_root, device, {})
    begin = time.perf_counter()
    loss = trainer.train_epoch(0)
    times['epoch_seconds'] = time.perf_counter() - begin
    begin = time.perf_counter()
    metrics = trainer.validate()
    times['validation_seconds'] = time.perf_counter() - begin
    times['total_seconds'] = time.perf_counter() - started
    largest = args.mrl_hidden_sizes[-1]
    return dict(times, steps=trainer.steps_per_epoch, seconds_per_step=times['epoch_seconds'] / trainer.steps_per_epoch,
                users=len(splits['val'][1]), items=data.num_items, train_loss=loss,
                ndcg10_largest_size=metrics[largest]['NDCG@10'])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data_root', default='data', help='folder holding <dataset_code>/ (read in place)')
    parser.add_argument('--dataset_code', default='beauty')
    parser.add_argument('--sizes', default=PAPER_SIZES)
    parser.add_argument('--feature_dim', type=int, default=1024, help='width of each synthetic feature table')
    parser.add_argument('--amp', default='none', choices=['none', 'bf16'])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--users', type=int, default=None, help='only the first N users (a quick check)')
    parser.add_argument('--json', action='store_true', help='print one JSON object instead of the table')
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as export_root:
        result = run_epoch(options, Path(export_root))
    result['config'] = {'dataset': options.dataset_code, 'sizes': options.sizes, 'blocks': 2, 'batch_size': 32,
                        'features': f'2 x {options.feature_dim} (synthetic)', 'amp': options.amp,
                        'users_limit': options.users,
                        'hardware': hardware(torch.device(options.device), [int(s) for s in options.sizes.split(',')])}
    result['config']['hardware']['load_average_at_end'] = os.getloadavg()[0]
    if options.json:
        print(json.dumps(result, indent=1))
        return result
    cpu = result['config']['hardware']['cpu']
    print(f"\n{options.dataset_code}: one epoch + validation, 2 blocks, sizes {options.sizes}, "
          f"2 x {options.feature_dim}-d features, --amp {options.amp}; {cpu['model']} "
          f"(torch capability {cpu['torch_capability']}), "
          f"{torch.get_num_threads()} threads\n")
    print('| steps | s/step | epoch s | validation s (users) | end to end s |')
    print('|---|---|---|---|---|')
    print(f"| {result['steps']} | {result['seconds_per_step']:.3f} | {result['epoch_seconds']:.0f} | "
          f"{result['validation_seconds']:.1f} ({result['users']:,}) | {result['total_seconds']:.0f} |")
    return result


if __name__ == '__main__':
    main()
