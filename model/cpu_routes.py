"""The CPU routes this process has taken, and pinning them in another process of the same run.

Two routes are chosen by timed probes (model/fp32_matmul.py: oneDNN or the default library for
fp32 products; model/mrl.py: fused or per-chunk nested linears). Either choice computes the same
numbers up to float rounding, but not bit for bit, and a probe on a busy machine can choose
differently from one run to the next. A resumed run therefore takes the routes its checkpoint
recorded (trainer/trainer.py), when it resumes on the same CPU model, so that it ends exactly like
an uninterrupted run (docs/resume.md). Exactness is still checked here: a pinned oneDNN route is
taken only where this process's own exactness probe allows it.
"""
import torch

from model import fp32_matmul, mrl
from utils.cpu_probe import cpu_model_name


def taken():
    """{'cpu_model', 'onednn_fp32' (True, False, or None: not decided yet), 'mrl_fused' ([sizes,
    dtype name, fused] per probed layer shape)}: the decisions this process made so far."""
    return {'cpu_model': _cpu(), 'onednn_fp32': fp32_matmul.decided_route(),
            'mrl_fused': [[list(sizes), str(dtype).removeprefix('torch.'), fused]
                          for (sizes, dtype), fused in mrl.decided_routes().items()]}


def _cpu():
    """The CPU model and torch's kernel capability (an instruction-set cap changes the kernels)."""
    return f'{cpu_model_name()} ({torch.backends.cpu.get_cpu_capability()})'


def pin(routes):
    """Take the decisions of `routes` (from `taken` in an earlier process) instead of probing.
    Returns False, pinning nothing, when they were taken on another CPU model."""
    if routes.get('cpu_model') != _cpu():
        return False
    if routes.get('onednn_fp32') is not None:
        fp32_matmul.pin_route(routes['onednn_fp32'])
    mrl.pin_routes({(tuple(sizes), getattr(torch, dtype)): fused for sizes, dtype, fused in routes.get('mrl_fused', [])})
    return True
