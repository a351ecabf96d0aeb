"""Seeds, devices, mixed precision, and the test-only fault plan."""
import contextlib
import os
import random
import signal

import numpy as np
import torch

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
    """bf16 autocast for matrix products when amp == 'bf16', else a no-op context."""
    if amp == 'bf16':
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
