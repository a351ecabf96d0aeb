"""Counting a step's matrix-product FLOPs, and the machine's large-matmul rate to compare them with.

FLOPs are 2 per multiply-add of every matrix product the step dispatches (forward and backward),
a complex multiply-add counted as 4 real ones. Element-wise work (softmax, norms, the scan, the
optimiser) is not counted: it is small beside the products and has no 'peak' to compare with.
"""
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _matmul_flops(packet, args):
    """(FLOPs, an operand) of one matrix product (any overload); (0, None) for anything else."""
    if packet is aten.mm:
        a, b = args[0], args[1]
        return 2 * a.shape[0] * a.shape[1] * b.shape[1], a
    if packet is aten.addmm or packet is aten.addmm_:
        a, b = args[1], args[2]
        return 2 * a.shape[0] * a.shape[1] * b.shape[1], a
    if packet is aten.bmm:
        a, b = args[0], args[1]
        return 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2], a
    if packet is aten.baddbmm or packet is aten.baddbmm_:
        a, b = args[1], args[2]
        return 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2], a
    return 0, None


class MatmulFlopCounter(TorchDispatchMode):
    """`with MatmulFlopCounter() as counter: step()`; then `counter.flops`."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        flops, operand = _matmul_flops(func.overloadpacket, args)
        if flops:
            self.flops += flops * (4 if operand.is_complex() else 1)
        return func(*args, **(kwargs or {}))


def count_matmul_flops(step):
    with MatmulFlopCounter() as counter:
        step()
    return counter.flops


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def matmul_rate(device, dtype=torch.float32, size=4096, repeats=5, budget=10.0):
    """Best GFLOP/s of a (size x size) @ (size x size) product over up to `repeats` tries within
    about `budget` seconds, at least one (best, not mean: on a shared machine the best try is the
    hardware, the others include the neighbours). The budget keeps a slow CPU's benchmark short: a
    4096 product took 6 s capped at AVX2 here."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    a @ b
    best = float('inf')
    started = time.perf_counter()
    for _ in range(repeats):
        synchronize(device)
        begin = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - begin)
        if time.perf_counter() - started > budget:
            break
    return 2 * size ** 3 / best / 1e9
