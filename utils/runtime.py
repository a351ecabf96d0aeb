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


def resolve_device(name):
    """'auto' -> cuda when available, else cpu; a clear error for an unusable device."""
    if name in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f'--device {name}: CUDA is not available on this machine; use --device cpu.')
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
