"""Seeds, devices and mixed precision."""
import contextlib
import random

import numpy as np
import torch


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
