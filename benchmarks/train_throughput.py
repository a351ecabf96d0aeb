"""Training and evaluation throughput of the fast path against the reference path, in one run.

    python benchmarks/train_throughput.py            # the paper's configuration, a table
    python benchmarks/train_throughput.py --json     # the same, as one JSON object (or python -m ...)

Data of Beauty's shape are built in memory (benchmarks/synthetic.py). Method, so that the figures
survive a shared, noisy machine: all timings run in this one process, interleaved round by round
(a reference step, then a few fast fp32 and bf16 steps on the same batches), after one warm-up step
each; the reference runs fewer steps than the fast path (it is ~10x slower). Evaluation: the fast
evaluator over all users (one pass, the item table projected once), the reference on a few
batches between those passes. FLOPs are counted per step (benchmarks/flops.py) and compared with
the best large-matmul rate measured in this run. Peak memory: one fresh process per variant
(benchmarks/memory_probe.py). What the CPU cannot do natively is skipped and said so in the table
and the JSON ('skipped'): bf16 runs only where bf16 is native (utils/cpu_probe.py) unless --bf16
forces it; --no-bf16 skips every bf16 variant, the memory probe's included.
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `python benchmarks/train_throughput.py` runs from anywhere

from benchmarks.flops import count_matmul_flops, matmul_rate, synchronize  # noqa: E402  (after the path set-up)
from benchmarks.hardware import hardware  # noqa: E402
from benchmarks.report import print_table, summarise  # noqa: E402
from benchmarks.synthetic import add_workload_options, beauty_like_model, beauty_like_splits  # noqa: E402
from benchmarks.workloads import (fast_eval, fast_loss_and_grads, fast_step, make_trainer,  # noqa: E402
                                  reference_eval_batch, reference_loss_and_grads, reference_step)
from model.fp32_matmul import onednn_fp32_is_exact  # noqa: E402
from utils.cpu_probe import BF16_ENV, Bf16Verdict, bf16_verdict_set_to  # noqa: E402
from utils.runtime import bf16_is_native  # noqa: E402


def timed(device, work):
    synchronize(device)
    started = time.perf_counter()
    result = work()
    synchronize(device)
    return time.perf_counter() - started, result


def measure_training(trainer, device, batch_size, rounds, fast_per_round, use_bf16, compiled):
    """Seconds per step of each variant, interleaved; FLOPs per step counted on the same batches."""
    order = torch.randperm(len(trainer.tokens), generator=torch.Generator().manual_seed(0))
    batch = lambda i: order[i * batch_size:(i + 1) * batch_size]
    variants = ['reference', 'fast'] + (['fast_bf16'] if use_bf16 else [])
    seconds = {name: [] for name in variants}
    if compiled is not None:
        seconds['fast_compiled'] = []
    run = {'reference': lambda i: reference_step(trainer, batch(i)),
           'fast': lambda i: fast_step(trainer, batch(i), 'none'),
           'fast_bf16': lambda i: fast_step(trainer, batch(i), 'bf16')}
    if compiled is not None:
        def compiled_step(i):
            trainer.train_module = compiled
            try:
                return fast_step(trainer, batch(i), 'none')
            finally:
                trainer.train_module = trainer.model
        run['fast_compiled'] = compiled_step
        warmup = time.perf_counter()
        for i in range(3):  # the first shapes compile; later ones reuse dynamic kernels
            compiled_step(i)
        compile_seconds = time.perf_counter() - warmup
    for name in variants:
        run[name](0)  # warm-up
    for round_index in range(rounds):
        first = 1 + round_index * fast_per_round
        seconds['reference'].append(timed(device, lambda: run['reference'](first))[0])
        for name in seconds:
            if name != 'reference':
                seconds[name].append(sum(timed(device, lambda: run[name](i))[0]
                                         for i in range(first, first + fast_per_round)) / fast_per_round)
    fast_batches = range(1, 1 + rounds * fast_per_round)
    # The reference computes every position of every row: its FLOPs do not depend on the batch.
    flops = {'reference': count_matmul_flops(lambda: reference_loss_and_grads(trainer, batch(1))),
             'fast': sum(count_matmul_flops(lambda: fast_loss_and_grads(trainer, batch(i), 'none'))
                         for i in fast_batches) / len(fast_batches)}
    # Each round's steps ran back to back under the same load: compare within rounds, then take
    # the median over rounds.
    speedups = {name: statistics.median(r / f for r, f in zip(seconds['reference'], v))
                for name, v in seconds.items() if name != 'reference'}
    result = {'seconds_per_step': {name: statistics.median(v) for name, v in seconds.items()},
              'seconds_per_step_best': {name: min(v) for name, v in seconds.items()},
              'speedup_over_reference': speedups,
              'gflop_per_step': {k: v / 1e9 for k, v in flops.items()},
              'rounds': rounds, 'fast_steps_per_round': fast_per_round}
    if compiled is not None:
        result['compile_warmup_seconds'] = compile_seconds
    return result


def bf16_effect(trainer, batch_size):
    """Relative change of the loss and of the gradients under bf16 autocast, on one batch (dropout
    off, so that both runs compute the same function)."""
    indices = torch.randperm(len(trainer.tokens), generator=torch.Generator().manual_seed(7))[:batch_size]
    params = [p for p in trainer.model.parameters()]
    trainer.model.eval()
    exact = fast_loss_and_grads(trainer, indices, 'none')
    exact_grads = torch.cat([p.grad.flatten() for p in params if p.grad is not None])
    low = fast_loss_and_grads(trainer, indices, 'bf16')
    low_grads = torch.cat([p.grad.flatten() for p in params if p.grad is not None])
    trainer.model.zero_grad(set_to_none=True)
    trainer.model.train()
    return {'loss_relative_change': abs(float(low - exact)) / abs(float(exact)),
            'gradient_relative_change': float((low_grads - exact_grads).norm() / exact_grads.norm())}


def measure_evaluation(model, examples, sizes, batch_size, device, reference_batches, users, use_bf16):
    """Users per second of full fast passes (fp32, bf16) and of reference batches, interleaved:
    reference batch, fast pass, reference batch, bf16 pass, reference batch..."""
    users = len(examples[1]) if users is None else min(users, len(examples[1]))
    passes = [('fast', 'none')] + ([('fast_bf16', 'bf16')] if use_bf16 else [])
    reference_eval_batch(model, examples, 0, batch_size, device)  # warm-up
    reference_seconds, reference_ranks, fast_seconds, fast_ranks = [], [], {}, {}
    for index in range(max(reference_batches, len(passes))):
        if index < reference_batches:
            seconds, ranks = timed(device, lambda: reference_eval_batch(model, examples, index * batch_size,
                                                                         batch_size, device))
            reference_seconds.append(seconds)
            reference_ranks.append(ranks)
        if index < len(passes):
            name, amp = passes[index]
            fast_seconds[name], fast_ranks[name] = timed(
                device, lambda: fast_eval(model, examples, len(sizes), batch_size, device, amp, users))
    # The fast evaluator must rank exactly as the reference does (a check on the benchmark itself).
    reference_all = torch.cat(reference_ranks, dim=1).to(fast_ranks['fast'].device)
    covered = min(reference_all.shape[1], users)
    difference = (fast_ranks['fast'][:, :covered] - reference_all[:, :covered]).abs()
    same = (difference == 0).float().mean()
    out = {'users': users, 'reference_batches': reference_batches,
           'users_per_s': {'reference': batch_size / statistics.median(reference_seconds)},
           'full_pass_seconds': dict(fast_seconds), 'fast_equals_reference_fraction': float(same),
           'fast_reference_max_rank_difference': int(difference.max())}
    for name, seconds in fast_seconds.items():
        out['users_per_s'][name] = users / seconds
    if 'fast_bf16' in fast_ranks:  # how far bf16 moves each target's rank, relative to the rank
        change = (fast_ranks['fast_bf16'] - fast_ranks['fast']).abs().float() / fast_ranks['fast'].float()
        out['bf16_rank_relative_change_median'] = float(change.median())
    return out


def measure_matmul_rates(device, use_bf16, size):
    """Large-product GFLOP/s: fp32 on the default library and, where exact (model/fp32_matmul.py),
    on oneDNN; the fast path's fraction is taken of the larger."""
    rates = {'fp32_default': matmul_rate(device, size=size)}
    if device.type == 'cpu' and onednn_fp32_is_exact():
        precision = torch.backends.mkldnn.matmul.fp32_precision
        torch.backends.mkldnn.matmul.fp32_precision = 'bf16'  # oneDNN, also where its probe chose MKL
        try:
            rates['fp32_onednn'] = matmul_rate(device, size=size)
        finally:
            torch.backends.mkldnn.matmul.fp32_precision = precision
    if use_bf16:
        rates['bf16'] = matmul_rate(device, torch.bfloat16, size=size)
    return rates


MEMORY_VARIANTS = (('train_reference', 2), ('train_fast', 3), ('train_fast_bf16', 3), ('eval_reference', 1),
                   ('eval_fast', 2))


def measure_memory(args, use_bf16, bf16_forced):
    """Peak memory per variant, each in a fresh process (the bf16 one only when bf16 is measured)."""
    peaks = {}
    environment = dict(os.environ, **({BF16_ENV: 'native'} if bf16_forced else {}))
    for variant, steps in MEMORY_VARIANTS:
        if variant.endswith('bf16') and not use_bf16:
            continue
        command = [sys.executable, str(REPO / 'benchmarks' / 'memory_probe.py'), variant,
                   '--batch_size', str(args.batch_size), '--eval_batch_size', str(args.eval_batch_size),
                   '--sizes', args.sizes, '--blocks', str(args.blocks), '--device', args.device,
                   '--users', str(args.users), '--items', str(args.items), '--feature_dim', str(args.feature_dim),
                   '--steps', str(steps)]
        done = subprocess.run(command, capture_output=True, text=True, env=environment)
        if done.returncode != 0:
            raise SystemExit(f'memory probe {variant} failed:\n{done.stderr[-2000:]}')
        peaks[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    return peaks


def bf16_plan(requested, device):
    """(measure bf16, forced where emulated, why skipped or None). requested: None (where native),
    True (--bf16: even where emulated, labelled so), False (--no-bf16)."""
    if requested is False:
        return False, False, '--no-bf16'
    native, reason = bf16_is_native(device)
    if requested is None:
        return native, False, (None if native else f'bf16 is not native here: {reason} (--bf16 measures it anyway)')
    return True, not native, None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_workload_options(parser)
    parser.add_argument('--rounds', type=int, default=3, help='reference steps timed (one per round)')
    parser.add_argument('--fast_per_round', type=int, default=4, help='fast steps timed per round and variant')
    parser.add_argument('--eval_reference_batches', type=int, default=3)
    parser.add_argument('--eval_users', type=int, default=None, help='users in the fast pass (default all)')
    parser.add_argument('--bf16', action=argparse.BooleanOptionalAction, default=None,
                        help='bf16 variants (default: where bf16 is native; --bf16 also where emulated, slow)')
    parser.add_argument('--compile', action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument('--memory', action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument('--matmul_size', type=int, default=4096, help='n of the n x n x n peak product')
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s choice)')
    parser.add_argument('--json', action='store_true', help='print one JSON object instead of the table')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = [int(s) for s in args.sizes.split(',')]
    machine = hardware(device, sizes)  # the CPU's own bf16 verdict, before --bf16 may override it
    use_bf16, bf16_forced, bf16_skipped = bf16_plan(args.bf16, device)
    forced = Bf16Verdict(True, 'forced by the benchmark\'s --bf16 (emulated here)') if bf16_forced else None
    with bf16_verdict_set_to(forced) if forced else contextlib.nullcontext():
        summary = run(args, device, sizes, use_bf16, bf16_forced, machine)
    summary['bf16_measured'] = use_bf16
    summary['bf16_emulated'] = bf16_forced
    summary['skipped'] = {} if bf16_skipped is None else {
        'bf16 (training, evaluation, large product, memory probe)': bf16_skipped}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print_table(summary, summary['config'])
    return summary


def run(args, device, sizes, use_bf16, bf16_forced, machine):
    config = {'batch_size': args.batch_size, 'sizes': sizes, 'blocks': args.blocks, 'users': args.users,
              'items': args.items, 'feature_dim': args.feature_dim, 'hardware': machine}
    log = (lambda *a: print(*a, file=sys.stderr, flush=True))
    started = time.time()
    splits = beauty_like_splits(args.users, args.items)
    model = beauty_like_model(sizes, args.blocks, args.items, args.feature_dim).to(device)
    trainer = make_trainer(model, splits, sizes, args.batch_size, device)
    rates = measure_matmul_rates(device, use_bf16, args.matmul_size)
    log(f'matmul GFLOP/s {rates} ({time.time() - started:.0f}s)')
    compiled = torch.compile(model, dynamic=True) if args.compile else None
    train = measure_training(trainer, device, args.batch_size, args.rounds, args.fast_per_round, use_bf16, compiled)
    log(f"training {train['seconds_per_step']} ({time.time() - started:.0f}s)")
    bf16 = bf16_effect(trainer, args.batch_size) if use_bf16 else None
    for name, rate in measure_matmul_rates(device, use_bf16, args.matmul_size).items():  # again: the best of both tries
        rates[name] = max(rates[name], rate)
    rates['fp32'] = max(rates['fp32_default'], rates.get('fp32_onednn', 0.0))
    evaluation = measure_evaluation(model, splits['val'], sizes, args.eval_batch_size, device,
                                    args.eval_reference_batches, args.eval_users, use_bf16)
    log(f"evaluation {evaluation['users_per_s']} ({time.time() - started:.0f}s)")
    memory = measure_memory(args, use_bf16, bf16_forced) if args.memory else None
    summary = summarise(train, evaluation, memory, rates, bf16, args)
    config['hardware']['load_average_at_end'] = os.getloadavg()[0]
    summary['config'] = config
    summary['benchmark_seconds'] = time.time() - started
    return summary


def run_with_passive_omp_threads():
    """On a shared machine, OpenMP threads that spin at every barrier wait for a descheduled peer:
    a 2-thread step ran 3-4x slower than a 1-thread one while other jobs were running. Passive
    waiting removes that; it must be set before the OpenMP runtime starts, hence the re-exec.
    An OMP_WAIT_POLICY already in the environment is kept."""
    if 'OMP_WAIT_POLICY' not in os.environ:
        os.environ['OMP_WAIT_POLICY'] = 'PASSIVE'
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve())] + sys.argv[1:])
    main()


if __name__ == '__main__':
    run_with_passive_omp_threads()
