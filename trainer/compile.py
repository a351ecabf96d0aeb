"""--compile: torch.compile of the training step on CUDA; a one-line refusal on the CPU, where it
only slows training down.

Measured on the CPU (the demo, default options, docs/distributed.md): with the oneDNN probe decided
before tracing and dynamic shapes, a compiled step took about 1.4x the eager time, after 5-6 minutes
of compiling. The step is dominated by matrix products that already run in oneDNN/MKL, TorchInductor
generates no code for the LRU's complex operators (they run eagerly between compiled pieces), and
the nested loss is a hand-written autograd.Function.
"""
import torch

from config import ConfigError
from model.fp32_matmul import onednn_fp32_is_exact

CPU_REFUSAL = ('--compile does not help on the CPU: on the demo a compiled training step took about 1.4x the '
               'eager time, after 5-6 minutes of compiling (docs/distributed.md); train without it '
               '(--no-compile when resuming a run started with it)')


def check_compile(compile_requested, device):
    """Refuse --compile, before anything is read or written, where it cannot help."""
    if compile_requested and torch.device(device).type != 'cuda':
        raise ConfigError(CPU_REFUSAL)


def compile_for_training(module):
    """The training module compiled. dynamic=True: every batch has its own number of labelled
    positions and its own scan window, and compiling per shape would recompile at nearly every step.
    The CPU oneDNN probe (model/fp32_matmul.py) is decided first, eagerly, so that the compiler never
    traces it (it builds a torch.Generator, which the compiler rejects)."""
    onednn_fp32_is_exact()
    return torch.compile(module, dynamic=True)
