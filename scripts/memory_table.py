"""Peak tensor memory of training and evaluation at the paper's configuration, per dataset shape.

    python scripts/memory_table.py                 # the table for docs/distributed.md (CPU, ~minutes)
    python scripts/memory_table.py --device cuda   # the same measured by the CUDA allocator

On the CPU, torch's MemTracker adds up live tensor bytes (parameters, gradients, AdamW state, the
frozen feature buffer, activations) at the worst moment: what `torch.cuda.max_memory_allocated`
would report on a GPU, without the CUDA context (~0.5 GiB) or allocator slack. Data: the real
sequences where `--data_root` holds them (P5 layout), else random sequences with the dataset's user
and item counts and mean length (datasets/published_stats.py); random 1024-d text and image features (memory depends on
shapes only). Memory depends on the batch through its labelled positions, so two batches are
measured: a typical one and the one of the longest histories (the worst batch of an epoch).
For the per-GPU figure of DDP over N GPUs, pass --batch_size 32/N (and add the DDP gradient
buckets, one more copy of the gradients: 45 MiB).
"""
import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasets.p5 import load_p5, split_examples  # noqa: E402  (after the path set-up above)
from datasets.published_stats import PUBLISHED_STATS  # noqa: E402
from evaluation.evaluate import evaluate_ranks  # noqa: E402
from model.fmrlrec import FMRLRec  # noqa: E402
from model.packing import pack_batch  # noqa: E402
from trainer.optim import build_optimizer  # noqa: E402
from utils.paper import PAPER_FEATURE_WIDTH, PAPER_NUM_BLOCKS, PAPER_SIZES  # noqa: E402
from utils.runtime import autocast  # noqa: E402



def synthetic_splits(users, items, mean_length, max_len, seed=0):
    """5-core-like lengths (5 + a geometric tail with the dataset's mean), random items."""
    rng = np.random.default_rng(seed)
    lengths = 5 + rng.geometric(1.0 / (mean_length - 4), size=users) - 1
    sequences = {u + 1: rng.integers(1, items + 1, size=int(n)).tolist() for u, n in enumerate(lengths)}
    return split_examples(SimpleNamespace(sequences=sequences), max_len)


def peak_mib(work, device, track=()):
    """Peak MiB of `work()`: CUDA allocator peak on a GPU, MemTracker's total on the CPU."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        work()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    from torch.distributed._tools.mem_tracker import MemTracker
    tracker = MemTracker()
    tracker.track_external(*track)
    with tracker:
        work()
    return tracker.get_tracker_snapshot('peak')[device]['Total'] / 2 ** 20


def measure(code, device, amp, batch_size, eval_batch_size, blocks, data_root=None):
    users, items, mean_length = (PUBLISHED_STATS[code][key] for key in ('users', 'items', 'avg_len'))
    real = data_root is not None and (Path(data_root) / code / 'sequential_data.txt').exists()
    splits = split_examples(load_p5(Path(data_root) / code), 50) if real else \
        synthetic_splits(users, items, mean_length, 50)
    generator = torch.Generator().manual_seed(0)
    features = [torch.nn.functional.normalize(torch.randn(items + 1, PAPER_FEATURE_WIDTH, generator=generator), dim=1)
                for _ in range(2)]
    model = FMRLRec(items, PAPER_SIZES, features[0], features[1], num_blocks=blocks).to(device)
    args = SimpleNamespace(weight_decay=0.01, optimizer='AdamW', lr=1e-4, adam_epsilon=1e-9)
    optimizer = build_optimizer(model, args)
    tokens, labels = splits['train']
    longest = (labels > 0).sum(1).argsort(descending=True)

    def step(indices):
        mask = labels[indices] > 0
        packed = pack_batch(tokens[indices], mask).to(device)
        with autocast(device, amp):
            loss, _ = model(packed, labels[indices][mask].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    step(torch.arange(batch_size))  # AdamW's state exists from the first step on: count it
    result = {'dataset': code, 'sequences': 'real' if real else 'synthetic', 'batch': batch_size, 'amp': amp,
              'parameters': sum(p.numel() for p in model.parameters())}
    result['train_typical_mib'] = peak_mib(lambda: step(torch.arange(batch_size, 2 * batch_size)), device,
                                           (model, optimizer))
    result['train_worst_mib'] = peak_mib(lambda: step(longest[:batch_size]), device, (model, optimizer))
    _, inputs, targets, histories = splits['val']
    model.eval()

    def evaluate_batch():  # the evaluator itself, on one batch: item table, LRU inputs, scores, ranks
        users = slice(0, eval_batch_size)
        evaluate_ranks(model, inputs[users], targets[users], histories[users], len(model.sizes), eval_batch_size,
                       device, amp=amp, progress=False)
    result['eval_mib'] = peak_mib(evaluate_batch, device, (model,))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--datasets', default='beauty,clothing,sports,toys')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--amp', default='none,bf16')
    parser.add_argument('--batch_size', type=int, default=32)
    parser.add_argument('--eval_batch_size', type=int, default=64)
    parser.add_argument('--blocks', type=int, default=PAPER_NUM_BLOCKS)
    parser.add_argument('--data_root', default=None, help='use the real sequences of <data_root>/<code> when present')
    options = parser.parse_args(argv)
    device = torch.device(options.device)
    for code in options.datasets.split(','):
        for amp in options.amp.split(','):
            result = measure(code, device, amp, options.batch_size, options.eval_batch_size, options.blocks,
                             options.data_root)
            print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}), flush=True)


if __name__ == '__main__':
    main()
