"""Exact fp32 matrix products through oneDNN on CPUs where MKL is the slower library.

On the AMD EPYC (Zen 4) machines this project runs on, MKL's fp32 GEMM reaches ~85% of a core's
peak on large square products but only 40-50% on the skinny products of the logits (218 x 512 @
512 x 12,102) and 2-5% when one side is 8 wide; oneDNN's AVX-512 fp32 kernels reach 85-97% on the
first two and are ~10x faster than MKL on the third (benchmarks/README.md). PyTorch sends an fp32
matmul to oneDNN only when
`torch.backends.mkldnn.matmul.fp32_precision` is 'bf16', which PERMITS oneDNN to round inputs to
bf16: where oneDNN has such a kernel (Intel AMX, for example) it would, and the result would no
longer be fp32. So the switch is used only after a probe shows that, on this CPU, the products it
routes stay fp32-exact (errors of fp32 size, not of bf16 size), and not where a timed probe on
products of the step's shapes finds the default library clearly faster: the gain is a property of
the CPU, and the route must never make the step slower.
"""
import contextlib
import os

import torch

from utils.cpu_probe import bare, clearly_slower, compare, settled

DISABLE_ENV = 'FMRLREC_NO_ONEDNN_FP32'  # set to 1 to keep every fp32 product on the default library
_PROBE_SHAPES = ((256, 1024, 512), (64, 8, 2048), (64, 2048, 8))  # square-ish, K = 8, N = 8
# The step's products (model/nested_loss.py, frozen_input_linear), scaled down to ~10 ms together:
# logits of a wide chunk, of an 8-wide chunk and its hidden-state gradient, the table projection.
SPEED_PROBE_SHAPES = ((256, 512, 1024), (256, 8, 4096), (256, 4096, 8), (1024, 1024, 256))
_verdict = None
_speed = None
_pinned = None  # the speed decision of an earlier process of the same run (model/cpu_routes.py)


def _probe():
    """True when oneDNN's products, with bf16 rounding permitted, are as exact as fp32 ones."""
    generator = torch.Generator().manual_seed(0)
    precision = torch.backends.mkldnn.matmul.fp32_precision
    try:
        for m, k, n in _PROBE_SHAPES:
            # Entries 1.0029..1.0032: bf16 (spacing 2^-7 near 1) would round every one to 1.0, a
            # systematic relative error of ~6e-3 in the product; fp32 stays within ~k * 2^-24.
            a = 1 + 3 * 2 ** -10 + torch.randint(0, 16, (m, k), generator=generator).float() * 2 ** -16
            b = 1 + 3 * 2 ** -10 + torch.randint(0, 16, (k, n), generator=generator).float() * 2 ** -16
            exact = a.double() @ b.double()
            torch.backends.mkldnn.matmul.fp32_precision = 'bf16'
            relative = (((a @ b).double() - exact).abs() / exact).max().item()
            torch.backends.mkldnn.matmul.fp32_precision = precision
            if relative > 1e-3:
                return False
        return True
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = precision


def onednn_fp32_is_exact():
    """Whether fp32 products may go to oneDNN here without leaving fp32 (probed once per process)."""
    global _verdict
    if _verdict is None:
        # PyTorch takes the switch only where oneDNN reports bf16 support (AVX-512 and up): on an
        # AVX2 CPU fp32 products stay on MKL whatever it says, and the route does not exist.
        usable = (os.environ.get(DISABLE_ENV, '0') in ('', '0') and torch.backends.mkldnn.is_available()
                  and hasattr(torch.backends.mkldnn, 'matmul') and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        _verdict = usable and _probe()
    return _verdict


def measure_library_speed():
    """Comparison of oneDNN (the route) against the default library (the baseline) on the probe
    shapes' products, one after another (utils/cpu_probe.compare; one thread, about 0.3 s)."""
    generator = torch.Generator().manual_seed(0)
    operands = [(torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator))
                for m, k, n in SPEED_PROBE_SHAPES]
    precision = torch.backends.mkldnn.matmul.fp32_precision

    def products(library_precision):
        def run():
            torch.backends.mkldnn.matmul.fp32_precision = library_precision
            for a, b in operands:
                a @ b
        return run
    try:
        with bare():
            return compare(products('bf16'), products(precision))
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = precision


def onednn_fp32_speed():
    """The library probe's Comparison (measured once per process, where oneDNN is exact)."""
    global _speed
    if _speed is None:
        _speed = settled(measure_library_speed, lambda comparison: clearly_slower(comparison.ratio))
    return _speed


def use_onednn_fp32():
    """oneDNN for fp32 products where it stays exact, unless it measured clearly slower than the
    default library (utils/cpu_probe.clearly_slower): oneDNN was 2-10x faster on the step's
    products on Zen 4 and level with MKL on Intel AVX-512 and on AVX2 (benchmarks/README.md)."""
    if not onednn_fp32_is_exact():
        return False
    return _pinned if _pinned is not None else not clearly_slower(onednn_fp32_speed().ratio)


def decided_route():
    """use_onednn_fp32() if this process has decided it already, else None (nothing is probed)."""
    if _verdict is None or (_verdict and _speed is None and _pinned is None):
        return None
    return use_onednn_fp32()


def pin_route(use_onednn):
    """Decide the speed question as an earlier process did (exactness is still probed here);
    None unpins it."""
    global _pinned
    _pinned = None if use_onednn is None else bool(use_onednn)


@contextlib.contextmanager
def fast_fp32_matmul(device):
    """Within the block, CPU fp32 products go to oneDNN where that stays exact and is faster.

    oneDNN builds and keeps a kernel per product shape: use it for products whose shapes repeat
    (the item-table projection, the logits of a batch), not around code whose shapes change with
    every batch, or its cache grows by hundreds of MB over an epoch.
    """
    if torch.device(device).type != 'cpu' or not use_onednn_fp32():
        yield
        return
    precision = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = 'bf16'
    try:
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = precision


class _FrozenInputLinear(torch.autograd.Function):
    """x W^T + b for an x that needs no gradient, both products under fast_fp32_matmul."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x)
        with fast_fp32_matmul(x.device):
            return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, = ctx.saved_tensors
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            with fast_fp32_matmul(x.device):
                grad_weight = grad_out.t() @ x
        if ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(0)
        return None, grad_weight, grad_bias


def frozen_input_linear(x, weight, bias=None):
    """F.linear for a fixed input that takes no gradient (the item features): its two large
    products, forward and weight gradient, on oneDNN where exact and faster. Falls back to F.linear under
    autocast (low-precision products go to oneDNN anyway) or when x needs a gradient."""
    if x.requires_grad or torch.is_autocast_enabled(x.device.type) or bias is None:
        return torch.nn.functional.linear(x, weight, bias)
    return _FrozenInputLinear.apply(x, weight, bias)
