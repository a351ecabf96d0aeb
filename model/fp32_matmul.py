"""Exact fp32 matrix products through oneDNN on CPUs where MKL is the slower library.

On the AMD EPYC (Zen 4) machines this project runs on, MKL's fp32 GEMM reaches ~85% of a core's
peak on large square products but only 40-50% on the skinny products of the logits (218 x 512 @
512 x 12,102) and 2-5% when one side is 8 wide; oneDNN's AVX-512 fp32 kernels reach 85-97% on the
first two and are ~10x faster than MKL on the third (benchmarks/README.md). PyTorch sends an fp32 matmul to oneDNN only when
`torch.backends.mkldnn.matmul.fp32_precision` is 'bf16', which PERMITS oneDNN to round inputs to
bf16: where oneDNN has such a kernel (Intel AMX, for example) it would, and the result would no
longer be fp32. So the switch is used only after a probe shows that, on this CPU, the products it
routes stay fp32-exact (errors of fp32 size, not of bf16 size); otherwise nothing changes.
"""
import contextlib
import os

import torch

DISABLE_ENV = 'FMRLREC_NO_ONEDNN_FP32'  # set to 1 to keep every fp32 product on the default library
_PROBE_SHAPES = ((256, 1024, 512), (64, 8, 2048), (64, 2048, 8))  # square-ish, K = 8, N = 8
_verdict = None


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
    """Whether fp32 products may go to oneDNN here (probed once per process)."""
    global _verdict
    if _verdict is None:
        usable = (os.environ.get(DISABLE_ENV, '0') in ('', '0') and torch.backends.mkldnn.is_available()
                  and hasattr(torch.backends.mkldnn, 'matmul'))
        _verdict = usable and _probe()
    return _verdict


@contextlib.contextmanager
def fast_fp32_matmul(device):
    """Within the block, CPU fp32 products go to oneDNN where that was verified to stay exact.

    oneDNN builds and keeps a kernel per product shape: use it for products whose shapes repeat
    (the item-table projection, the logits of a batch), not around code whose shapes change with
    every batch, or its cache grows by hundreds of MB over an epoch.
    """
    if torch.device(device).type != 'cpu' or not onednn_fp32_is_exact():
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
    products, forward and weight gradient, on oneDNN where exact. Falls back to F.linear under
    autocast (low-precision products go to oneDNN anyway) or when x needs a gradient."""
    if x.requires_grad or torch.is_autocast_enabled(x.device.type) or bias is None:
        return torch.nn.functional.linear(x, weight, bias)
    return _FrozenInputLinear.apply(x, weight, bias)
