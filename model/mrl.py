"""Matryoshka building blocks: nested linear maps and per-chunk LayerNorm.

Sizes S = [s_1 < ... < s_M = D] cut the width into chunks [s_{k-1}, s_k). An MRL linear computes
output chunk k from input dims [0, s_k) only, so the first s dims of its output depend only on the
first s dims of its input: the size-s model is the leading slice of every layer.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.cpu_probe import bare, clearly_slower, compare, settled

# Below this width the choice costs microseconds either way: the measured defaults, no probe.
MIN_PROBED_WIDTH = 256
PROBE_ROWS = 256  # about the labelled positions of a batch of 32 (benchmarks/README.md)
_fused_verdicts = {}  # (sizes, dtype) -> whether the dense masked matmul is used on the CPU


def chunk_widths(sizes):
    """[8, 16, 32] -> [8, 8, 16]: the width of each nested chunk."""
    return [size - prev for prev, size in zip([0] + list(sizes[:-1]), sizes)]


def block_lower_triangular(chunk_weights, width):
    """Stack per-chunk weights (c_k x s_k) into one dense (D x D) block-lower-triangular matrix."""
    return torch.cat([F.pad(w, (0, width - w.shape[1])) for w in chunk_weights], dim=0)


class MRLLinear(nn.Module):
    """D -> D linear whose output chunk k reads input dims [0, s_k): one (c_k x s_k) weight per chunk.

    Only the block-lower-triangular part is stored, so parameter counts are those of the nested
    model. `forward` uses one dense masked matmul (`fused=True`) or one matmul per chunk
    (`fused=False`); `fused=None` (the default) picks per device, see `use_fused`.
    With `complex_weights=True` the map is complex, W = W_re + i W_im, stored as two real tensors.
    """

    def __init__(self, sizes, bias=True, complex_weights=False):
        super().__init__()
        self.sizes = list(sizes)
        self.widths = chunk_widths(self.sizes)
        self.width = self.sizes[-1]
        self.complex_weights = complex_weights
        self.fused = None
        self.weight = nn.ParameterList(nn.Parameter(torch.empty(c, s)) for c, s in zip(self.widths, self.sizes))
        self.bias = nn.ParameterList(nn.Parameter(torch.empty(c)) for c in self.widths) if bias else None
        if complex_weights:
            self.weight_imag = nn.ParameterList(nn.Parameter(torch.empty(c, s)) for c, s in zip(self.widths, self.sizes))
            self.bias_imag = nn.ParameterList(nn.Parameter(torch.empty(c)) for c in self.widths) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # nn.Linear's default per chunk linear (fan_in = s_k). A complex layer starts real, as the
        # released code's `Linear(...).to(torch.cfloat)` does: the imaginary parts start at zero.
        for k, w in enumerate(self.weight):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            if self.bias is not None:
                bound = 1.0 / math.sqrt(w.shape[1])
                nn.init.uniform_(self.bias[k], -bound, bound)
        if self.complex_weights:
            for p in self.weight_imag:
                nn.init.zeros_(p)
            if self.bias_imag is not None:
                for p in self.bias_imag:
                    nn.init.zeros_(p)

    def dense_weight(self, imag=False):
        chunks = self.weight_imag if imag else self.weight
        return block_lower_triangular(list(chunks), self.width)

    def dense_bias(self, imag=False):
        chunks = self.bias_imag if imag else self.bias
        return None if chunks is None else torch.cat(list(chunks))

    def use_fused(self, x):
        """Dense masked matmul on accelerators (one kernel instead of M). On the CPU the masked
        product does 1.5x the multiply-adds and the dense weight is assembled every step: measured a
        wash in fp32 and ~6% faster under bf16 autocast on Zen 4 (benchmarks/README.md), so those are
        the defaults (per chunk in fp32, fused under autocast), left where a probe of this layer's
        sizes finds the default clearly slower on this CPU (`fused_is_faster_on_cpu`)."""
        if self.fused is not None:
            return self.fused
        if x.device.type != 'cpu':
            return True
        return fused_on_cpu(self.sizes, torch.get_autocast_dtype('cpu') if torch.is_autocast_enabled('cpu') else None)

    def forward(self, x):
        """Real layer on a real input (use `complex_in`/`real_out` for the complex LRU maps)."""
        if self.complex_weights:
            raise RuntimeError('complex MRLLinear: call complex_in() or real_out()')
        if self.use_fused(x):
            return F.linear(x, self.dense_weight(), self.dense_bias())
        return torch.cat(self._chunk_outputs(x, self.weight, self.bias), dim=-1)

    def _chunk_outputs(self, x, weights, biases):
        if torch.is_autocast_enabled(x.device.type):  # cast once, not once per (overlapping) slice
            x = x.to(torch.get_autocast_dtype(x.device.type))
        return [F.linear(x[..., :s], w, None if biases is None else biases[k])
                for k, (s, w) in enumerate(zip(self.sizes, weights))]

    def complex_in(self, x):
        """W x + b for a REAL input x, as real matmuls: returns (re, im) concatenated, (..., 2D)."""
        if self.use_fused(x):
            weight = torch.cat([self.dense_weight(), self.dense_weight(imag=True)], dim=0)
            bias = None if self.bias is None else torch.cat([self.dense_bias(), self.dense_bias(imag=True)])
            return F.linear(x, weight, bias)
        return torch.cat(self._chunk_outputs(x, self.weight, self.bias)
                         + self._chunk_outputs(x, self.weight_imag, self.bias_imag), dim=-1)

    def real_out(self, h_re, h_im):
        """Re(W h + b) for a complex h = h_re + i h_im: [h_re, h_im] @ [W_re, -W_im]^T."""
        if self.use_fused(h_re):
            weight = torch.cat([self.dense_weight(), -self.dense_weight(imag=True)], dim=1)
            return F.linear(torch.cat([h_re, h_im], dim=-1), weight, self.dense_bias())
        real = self._chunk_outputs(h_re, self.weight, self.bias)
        return torch.cat([torch.addmm(r, h_im[..., :s], w_im.t(), alpha=-1) if h_im.dim() == 2
                          else r - h_im[..., :s] @ w_im.t()
                          for r, s, w_im in zip(real, self.sizes, self.weight_imag)], dim=-1)


def measure_fused_against_chunked(sizes, dtype):
    """Comparison of the dense masked matmul (the route) against per-chunk matmuls (the baseline):
    forward and backward of one real MRL linear of these sizes on PROBE_ROWS rows (one thread,
    utils/cpu_probe.compare; about 0.2-0.4 s at D = 1024)."""
    with bare():
        layer = MRLLinear(sizes)
        x = torch.randn(PROBE_ROWS, layer.width, requires_grad=True)

        def step(fused):
            def run():
                layer.fused = fused
                with torch.autocast('cpu', dtype=dtype, enabled=dtype != torch.float32):
                    out = layer(x)
                out.float().sum().backward()
            return run
        return compare(step(True), step(False), rounds=7)


def fused_on_cpu(sizes, autocast_dtype=None):
    """Whether CPU MRL linears of these sizes use the dense masked matmul (autocast_dtype: None
    for fp32). Narrow layers keep the defaults unprobed."""
    if sizes[-1] < MIN_PROBED_WIDTH:
        return autocast_dtype is not None
    return fused_is_faster_on_cpu(sizes, autocast_dtype or torch.float32)


def fused_is_faster_on_cpu(sizes, dtype):
    """The CPU route of MRL linears of these sizes under `dtype`, probed once per process: the
    default (fused under bf16, per chunk in fp32) unless it measured clearly slower than the other."""
    key = (tuple(sizes), dtype)
    if key not in _fused_verdicts:
        # ratio: fused time / per-chunk time; the default is per chunk in fp32, fused under autocast
        leaves = ((lambda c: clearly_slower(1 / c.ratio)) if dtype == torch.float32
                  else (lambda c: clearly_slower(c.ratio)))
        left = leaves(settled(lambda: measure_fused_against_chunked(sizes, dtype), leaves))
        _fused_verdicts[key] = left if dtype == torch.float32 else not left
    return _fused_verdicts[key]


def decided_routes():
    """{(sizes, dtype): fused} for every layer shape probed (or pinned) in this process."""
    return dict(_fused_verdicts)


def pin_routes(verdicts):
    """Take the decisions of an earlier process of the same run (model/cpu_routes.py)."""
    _fused_verdicts.update(verdicts)


class MRLLayerNorm(nn.Module):
    """A separate LayerNorm (with its own affine) over each chunk; the whole vector is never normalised."""

    def __init__(self, sizes, eps=1e-5):
        super().__init__()
        self.widths = chunk_widths(sizes)
        self.norms = nn.ModuleList(nn.LayerNorm(c, eps=eps) for c in self.widths)

    def forward(self, x):
        parts = x.split(self.widths, dim=-1)
        return torch.cat([norm(part) for norm, part in zip(self.norms, parts)], dim=-1)
