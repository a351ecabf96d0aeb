"""Peak memory of one workload, in a fresh process: `python benchmarks/memory_probe.py VARIANT ...`.

Each variant runs alone in its own process so that one variant's peak cannot hide another's.
On the CPU the figure is the process's peak resident set (VmHWM: everything the process touched,
Python, torch and the data included), with the resident set of Python and torch alone
(`framework_mib`, measured first) reported beside it; on CUDA it is
torch.cuda.max_memory_allocated. The last output line is one JSON object.
"""
import argparse
import json
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python benchmarks/memory_probe.py` too

from benchmarks.synthetic import add_workload_options, beauty_like_model, beauty_like_splits  # noqa: E402
from benchmarks.workloads import (fast_eval, fast_step, make_trainer, reference_eval_batch,  # noqa: E402
                                  reference_step)

VARIANTS = ('train_reference', 'train_fast', 'train_fast_bf16', 'eval_reference', 'eval_fast')


def _status_mib(field):
    with open('/proc/self/status') as handle:
        for line in handle:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024  # kB
    raise OSError(f'{field} not in /proc/self/status')


def peak_rss_mib():
    """This process's peak resident set. VmHWM belongs to the address space exec created, whereas
    getrusage's ru_maxrss would report the parent's peak when that is larger (Linux keeps it)."""
    try:
        return _status_mib('VmHWM')
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rss_mib():
    try:
        return _status_mib('VmRSS')
    except OSError:
        return float('nan')


def load_framework():
    """Resident set of Python with torch and the machinery a training step loads lazily (the
    optimizer's first use imports ~70 MB of torch modules): the same for every variant, and not
    memory a path uses. On CUDA, max_memory_allocated leaves it out the same way."""
    parameter = torch.nn.Parameter(torch.zeros(8))
    optimizer = torch.optim.AdamW([parameter], fused=True)
    parameter.grad = torch.ones(8)
    optimizer.step()
    torch.nn.functional.linear(torch.randn(64, 64), torch.randn(64, 64))
    return rss_mib()


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument('variant', choices=VARIANTS)
    add_workload_options(parser)
    parser.add_argument('--steps', type=int, default=2)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sizes = [int(s) for s in args.sizes.split(',')]
    framework_mib = load_framework() if device.type == 'cpu' else 0.0
    splits = beauty_like_splits(args.users, args.items)
    model = beauty_like_model(sizes, args.blocks, args.items, args.feature_dim).to(device)
    trainer = make_trainer(model, splits, sizes, args.batch_size, device)
    setup_mib, before_mib = peak_rss_mib(), rss_mib()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    order = torch.randperm(len(trainer.tokens), generator=torch.Generator().manual_seed(1))
    for step in range(args.steps):
        indices = order[step * args.batch_size:(step + 1) * args.batch_size]
        if args.variant == 'train_reference':
            reference_step(trainer, indices)
        elif args.variant.startswith('train_fast'):
            fast_step(trainer, indices, 'bf16' if args.variant.endswith('bf16') else 'none')
        elif args.variant == 'eval_reference':
            reference_eval_batch(model, splits['val'], step * args.eval_batch_size, args.eval_batch_size, device)
        else:
            fast_eval(model, splits['val'], len(sizes), args.eval_batch_size, device, 'none',
                      users=(step + 1) * args.eval_batch_size * 4)
    result = {'variant': args.variant, 'framework_mib': framework_mib, 'setup_peak_mib': setup_mib,
              'resident_before_mib': before_mib}
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        result['peak_mib'] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        result['method'] = 'torch.cuda.max_memory_allocated'
    else:
        result['peak_mib'] = peak_rss_mib()
        result['method'] = 'peak resident set (VmHWM) of a fresh process per variant'
    print(json.dumps(result))


if __name__ == '__main__':
    sys.exit(main())
