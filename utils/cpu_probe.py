"""What this CPU computes natively, and the short timed probes that choose a CPU route by speed.

The same code runs on AVX2 servers and laptops, AVX-512 CPUs with and without bf16, and Arm. A
route that is fast on one can be tens of times slower on another: a bf16 product without native
bf16 instructions ran 50x slower than fp32 on an AVX2 machine (benchmarks/README.md). So every
CPU-specific route is decided once per process, by what the CPU reports and by a probe of a
fraction of a second, never by the CPU's name. Tests replace `measure_bf16_rates` (or set the
cache through `bf16_verdict_set_to`) to mock the outcome; model/fp32_matmul.py and model/mrl.py
probe their own routes with `bare` and `compare`.
"""
import contextlib
import os
import platform
import statistics
import subprocess
import time
from typing import NamedTuple

import torch
from torch.utils._python_dispatch import _disable_current_modes

BF16_ENV = 'FMRLREC_CPU_BF16'  # 'native' or 'emulated': overrides the decision (a CPU the probe misjudges)
# x86 AVX-512 BF16, AMX, AVX-NE-CONVERT (oneDNN's avx2_vnni_2 bf16 kernels); Arm's BF16 extension.
NATIVE_BF16_FLAGS = ('avx512_bf16', 'amx_bf16', 'avx_ne_convert', 'bf16')
ISA_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'avx512_fp16', 'avx512_vnni', 'amx_tile', 'amx_bf16',
             'avx_vnni', 'avx_ne_convert', 'asimd', 'sve', 'bf16')
# Emulated bf16 products ran at 0.01x (AVX2) and 0.13x (AVX-512 without BF16) of fp32; native ones at
# 1.5-2x (AVX-512 BF16) and more (AMX). Half the fp32 rate separates the two with room for noise.
MIN_BF16_RATIO = 0.5
BF16_PROBE_SHAPE = (256, 512, 256)  # m, k, n: 67 MFLOP, ~0.1 s emulated on AVX2, under 1 ms native
SWITCH_MARGIN = 1.25  # a default route is left only when the probe measures it this much slower
ISA_ENVIRONMENT = ('ATEN_CPU_CAPABILITY', 'ONEDNN_MAX_CPU_ISA', 'MKL_ENABLE_INSTRUCTIONS')


class Bf16Verdict(NamedTuple):
    native: bool
    reason: str
    bf16_gflops: float = float('nan')
    fp32_gflops: float = float('nan')


_bf16_verdict = None


def cpu_flags():
    """The CPU's feature flags (/proc/cpuinfo on Linux; on macOS Arm, bf16 from sysctl)."""
    flags = set()
    try:
        with open('/proc/cpuinfo') as handle:
            for line in handle:
                if line.startswith(('flags', 'Features')):
                    flags.update(line.split(':', 1)[1].split())
    except OSError:
        pass
    if platform.system() == 'Darwin':
        try:
            done = subprocess.run(['sysctl', '-n', 'hw.optional.arm.FEAT_BF16'], capture_output=True, text=True,
                                  timeout=5)
            if done.stdout.strip() == '1':
                flags.add('bf16')
        except (OSError, subprocess.SubprocessError):
            pass
    return flags


def cpu_model_name():
    try:
        with open('/proc/cpuinfo') as handle:
            return next(line.split(':', 1)[1].strip() for line in handle if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def cpu_summary():
    """Model name, torch's kernel capability, the instruction-set flags that matter here, and any
    environment variable that caps the instruction set (how an AVX2 machine is emulated)."""
    flags = cpu_flags()
    return {'model': cpu_model_name(), 'torch_capability': torch.backends.cpu.get_cpu_capability(),
            'flags': sorted(flag for flag in flags if flag in ISA_FLAGS or flag.startswith(('avx512', 'amx'))),
            'isa_environment': {name: os.environ[name] for name in ISA_ENVIRONMENT if name in os.environ}}


@contextlib.contextmanager
def bare():
    """Outside the caller's autocast, no_grad/inference mode and dispatch modes (a FLOP counter must
    not count a probe's products), with the global RNG left as it was, and on one thread: on a busy
    machine, threads waiting at barriers for a descheduled peer would measure the neighbours."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]), torch.autocast('cpu', enabled=False), \
                torch.inference_mode(False), torch.enable_grad(), _disable_current_modes():
            yield
    finally:
        torch.set_num_threads(threads)


class Comparison(NamedTuple):
    ratio: float          # median over rounds of (route's time / baseline's time) within a round
    seconds: float        # the route's best time
    baseline_seconds: float


def compare(route, baseline, rounds=9, budget=0.4):
    """Time `route()` against `baseline()`: one warm-up each (kernel selection, JIT), then rounds of
    both back to back, in alternating order, until `rounds` rounds or `budget` seconds (at least
    one). The ratio is taken within each round and its median kept, as the benchmark does: on a
    shared machine a neighbour then slows both alike (single best times varied 2x under load, the
    median ratio by 5%)."""
    for work in (route, baseline):
        work()
    ratios, route_times, baseline_times = [], [], []
    started = time.perf_counter()
    while not ratios or (len(ratios) < rounds and time.perf_counter() - started < budget):
        order = ((route, route_times), (baseline, baseline_times))
        for work, times in (order if len(ratios) % 2 == 0 else order[::-1]):
            begin = time.perf_counter()
            work()
            times.append(time.perf_counter() - begin)
        ratios.append(route_times[-1] / baseline_times[-1])
    return Comparison(statistics.median(ratios), min(route_times), min(baseline_times))


def clearly_slower(ratio):
    """Whether a default route measured `ratio` times the other one's time should be left. Only a
    clear loss counts: a route that flips with the noise from one process to the next would change
    results in their last bits between a run and its resumption."""
    return ratio > SWITCH_MARGIN


def settled(measure, leaves):
    """`measure()`'s Comparison, measured once more when it would leave the default route
    (`leaves(comparison)`): the route is left only when both measurements say so. On a busy
    machine a neighbour's burst made one process of a pair leave a route the other kept (the two
    then rounded differently); two bursts in a row are much rarer than one."""
    first = measure()
    if not leaves(first):
        return first
    second = measure()
    return first if leaves(second) else second


def measure_bf16_rates():
    """(bf16, fp32) GFLOP/s of one mid-sized product each (the best tries), and the median ratio of
    their times, on one thread."""
    m, k, n = BF16_PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
    a16, b16 = a.bfloat16(), b.bfloat16()
    with bare():
        result = compare(lambda: a16 @ b16, lambda: a @ b)
    flop = 2 * m * k * n
    return flop / result.seconds / 1e9, flop / result.baseline_seconds / 1e9, 1 / result.ratio


def _decide_bf16():
    forced = os.environ.get(BF16_ENV, '').strip().lower()
    if forced not in ('', 'native', 'emulated'):
        raise ValueError(f'{BF16_ENV}={forced!r}: use native or emulated (or leave it unset to measure)')
    if forced:
        return Bf16Verdict(forced == 'native', f'{BF16_ENV}={forced}')
    flags = cpu_flags()
    native_flags = sorted(flags & set(NATIVE_BF16_FLAGS))
    if torch.cpu._is_avx512_bf16_supported():
        native_flags.append('avx512_bf16 (torch)')
    bf16, fp32, ratio = measure_bf16_rates()
    capability = torch.backends.cpu.get_cpu_capability()
    measured = f'a bf16 product ran at {bf16:.1f} GFLOP/s against {fp32:.1f} for fp32 ({ratio:.2f}x the rate)'
    if not native_flags:
        return Bf16Verdict(False, f'this CPU reports no bf16 instructions (torch capability {capability}, no '
                                  f'{"/".join(NATIVE_BF16_FLAGS)} flag) and {measured}', bf16, fp32)
    if ratio < MIN_BF16_RATIO:
        return Bf16Verdict(False, f'this CPU reports {", ".join(native_flags)} but {measured} (torch capability '
                                  f'{capability}; an instruction set capped by ONEDNN_MAX_CPU_ISA?)', bf16, fp32)
    return Bf16Verdict(True, f'{", ".join(native_flags)}; {measured}', bf16, fp32)


def cpu_bf16_verdict():
    """Whether bf16 products are native (and so faster) on this CPU: decided once per process."""
    global _bf16_verdict
    if _bf16_verdict is None:
        _bf16_verdict = _decide_bf16()
    return _bf16_verdict


@contextlib.contextmanager
def bf16_verdict_set_to(verdict):
    """Within the block, `verdict` (a Bf16Verdict) stands for this process's decision (tests, and
    the benchmark's `--bf16`, which measures emulated bf16 on purpose)."""
    global _bf16_verdict
    previous = _bf16_verdict
    _bf16_verdict = verdict
    try:
        yield
    finally:
        _bf16_verdict = previous
