"""Seeds, devices, mixed precision, and the test-only fault plan."""
import contextlib
import os
import random
import signal
import sys

import numpy as np
import torch

from utils.cpu_probe import BF16_ENV, cpu_bf16_verdict

THREADS_ENV = 'OMP_NUM_THREADS'


def cpu_threads(requested=0):
    """Threads for this process's CPU work: `requested` when positive; else OMP_NUM_THREADS when the
    environment sets it (a job runner's one-thread-per-job stays in force); else the cores this process
    may use (its affinity mask, which taskset and container limits narrow), shared among the processes
    torchrun started on this machine. Several jobs on one machine: give each its share (README, "Speed")."""
    if requested and requested > 0:
        return int(requested)
    if os.environ.get(THREADS_ENV, '').strip().isdigit() and int(os.environ[THREADS_ENV]) > 0:
        return int(os.environ[THREADS_ENV])
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get('LOCAL_WORLD_SIZE', '1') or 1)))


def automatic_threads(requested=0):
    """Whether cpu_threads(requested) chooses the count itself (no --threads, no OMP_NUM_THREADS)."""
    return not (requested and requested > 0) and not (
        os.environ.get(THREADS_ENV, '').strip().isdigit() and int(os.environ[THREADS_ENV]) > 0)


@contextlib.contextmanager
def torch_threads(count):
    """torch's CPU threads set to `count` inside the block, restored after (commands run in-process too)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)

# Test-only: FMRLREC_FAULT='kill_at_step=N' kills the process right after global step N;
# 'kill_in_save=N' kills it during the N-th checkpoint write (after the data, before the rename).
FAULT_ENV = 'FMRLREC_FAULT'


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


class DeviceError(ValueError):
    """A --device that is not a device, or not one this machine has."""


def resolve_device(name):
    """'auto' -> cuda when available, else cpu; DeviceError for an unusable device."""
    if name in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):  # 'gpu', 'cuda:x', ...
        raise DeviceError(f'--device {name} is not a device: use auto (a GPU when there is one, else the CPU), '
                          f'cpu, cuda or cuda:N') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise DeviceError(f'--device {name}: CUDA is not available on this machine (a CPU build of torch, or no '
                          f'usable driver; README, "Installing torch"); use --device cpu or auto.')
    return device


def autocast(device, amp):
    """bf16 autocast for matrix products when amp == 'bf16' and the device computes bf16 natively,
    else a no-op context. Without native bf16 (an AVX2 CPU, an AVX-512 one without its BF16
    extension, a GPU before Ampere) bf16 products are emulated and run many times slower than fp32
    (benchmarks/README.md): there the block runs in fp32 and one warning line says so."""
    if amp != 'bf16':
        return contextlib.nullcontext()
    device = torch.device(device)
    native, reason = bf16_is_native(device)
    if not native:
        _warn_once(f'warning: --amp bf16 runs in fp32 here: {reason}; emulated bf16 would be slower than fp32'
                   + (f' (set {BF16_ENV}=native to force bf16)' if device.type == 'cpu' else ''))
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def bf16_is_native(device):
    """(native, reason): the CPU's from utils/cpu_probe.py (flags and a timed probe, once per process)."""
    if device.type == 'cpu':
        verdict = cpu_bf16_verdict()
        return verdict.native, verdict.reason
    if device.type == 'cuda':
        with torch.cuda.device(device):  # is_bf16_supported asks the current GPU: make it the training one
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        return native, f'{torch.cuda.get_device_name(device)} has no native bf16'
    return True, ''  # other accelerators: autocast decides


_warned = set()


def _warn_once(message):
    if message not in _warned:
        _warned.add(message)
        print(message, file=sys.stderr, flush=True)


def planned_fault(kind):
    """N from `FMRLREC_FAULT=<kind>=N` (several plans separated by commas), else None."""
    for plan in os.environ.get(FAULT_ENV, '').split(','):
        name, _, value = plan.strip().partition('=')
        if name == kind and value.strip().isdigit():
            return int(value)
    return None


def kill_self():
    """Die at once, as a pre-empted job or an OOM kill would: no cleanup, no flushing."""
    os.kill(os.getpid(), signal.SIGKILL)
