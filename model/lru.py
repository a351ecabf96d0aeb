"""The Linear Recurrent Unit with nested (MRL) input and output maps.

h_t = lambda * h_{t-1} + gamma * (B x_t),  y_t = Re(C h_t),  lambda = exp(-nu + i theta),
computed by a parallel scan over a left-padded sequence whose length is a power of two. The carry
out of a padding position is cut, so padding never leaks state into real positions.
"""
import math

import torch
import torch.nn as nn

from model.mrl import MRLLinear


def ring_init(width, r_min, r_max, generator=None):
    """(nu_log, theta_log, gamma_log): eigenvalues uniform on the ring r_min <= |lambda| <= r_max."""
    u1 = torch.rand(width, generator=generator)
    u2 = torch.rand(width, generator=generator)
    nu_log = torch.log(-0.5 * torch.log(u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2))
    theta_log = torch.log(2 * math.pi * u2)
    # |lambda| as the released code computes it (abs of a complex64 exp), not exp(-nu): the two differ
    # in the last bit of some entries, and the initial weights are to be the released code's exactly.
    modulus = torch.exp(torch.complex(-torch.exp(nu_log), torch.exp(theta_log))).abs()
    gamma_log = torch.log(torch.sqrt(1 - modulus ** 2))
    return nu_log, theta_log, gamma_log


def parallel_scan(u, lamb, carry_mask, overwrite=False):
    """All states of h_t = lamb * h_{t-1} [if carry_mask[t-1]] + u_t, by doubling.

    u: (B, L, D) complex with L a power of two; lamb: (D,) complex; carry_mask: (B, L) bool, True
    where a position passes its state on. Exact for left padding (a False prefix, then True): at
    each level the carry into a block comes from the last position of the block before it.
    With `overwrite=True` and no gradient recorded (evaluation), u is updated in place: the same
    arithmetic without a new (B, L, D) tensor per level.
    """
    batch, length, width = u.shape
    if length & (length - 1):
        raise ValueError(f'parallel_scan needs a power-of-two length, got {length}')
    in_place = overwrite and not (torch.is_grad_enabled() and (u.requires_grad or lamb.requires_grad))
    powers = lamb.unsqueeze(0)  # lambda^1 .. lambda^(l/2) as rows
    h = u
    level = 1
    while 2 ** level <= length:
        block = 2 ** level
        half = block // 2
        h = h.reshape(batch * length // block, block, width)
        gate = carry_mask.reshape(batch * length // block, block)[:, half - 1:half]
        if level > 1:
            powers = torch.cat((powers, powers * powers[-1]), 0)
        carry = h[:, half - 1:half] * gate.unsqueeze(-1)  # the state entering the second half
        if in_place:
            h[:, half:].addcmul_(powers, carry)
        else:
            h = torch.cat([h[:, :half], h[:, half:] + powers * carry], dim=1)
        level += 1
    return h.reshape(batch, length, width)


def sequential_scan(u, lamb, carry_mask):
    """The same recurrence step by step (the test oracle for `parallel_scan`)."""
    states = []
    state = torch.zeros_like(u[:, 0])
    for t in range(u.shape[1]):
        if t > 0:
            state = state * (lamb * carry_mask[:, t - 1].unsqueeze(-1))
        state = state + u[:, t]
        states.append(state)
    return torch.stack(states, dim=1)


class LRULayer(nn.Module):
    """The LRU on packed rows: position-wise maps on the computed rows only, the scan on a dense window."""

    def __init__(self, sizes, r_min=0.0, r_max=0.1, bias=True, dropout=0.1):
        super().__init__()
        width = sizes[-1]
        self.in_proj = MRLLinear(sizes, bias=bias, complex_weights=True)
        self.out_proj = MRLLinear(sizes, bias=bias, complex_weights=True)
        # One (3, D) parameter as in the released code: rows nu_log, theta_log, gamma_log.
        self.params_log = nn.Parameter(torch.stack(ring_init(width, r_min, r_max)))
        self.dropout = nn.Dropout(dropout)

    def lambda_gamma(self):
        nu, theta, gamma = torch.exp(self.params_log).float()
        return torch.exp(torch.complex(-nu, theta)), gamma

    def scan_inputs(self, x):
        """gamma * (B x): the (n, D) complex inputs of the recurrence, from (n, D) rows x. They
        depend on each row alone, so evaluation can compute them once per item
        (FMRLRec.first_lru_inputs)."""
        return self._scan_inputs(x, self.lambda_gamma()[1])

    def _scan_inputs(self, x, gamma):
        width = gamma.shape[0]
        u = self.in_proj.complex_in(x).float() * torch.cat([gamma, gamma])  # (n, 2D): re | im
        return torch.complex(u[:, :width], u[:, width:])

    def forward(self, x, packed, select=None, inputs=None):
        """x: (n, D) rows at `packed.rows`; returns (n, D), or the `select`ed rows only. inputs: the
        rows' `scan_inputs`, when precomputed (x is then not used)."""
        lamb, gamma = self.lambda_gamma()  # once per call: training differentiates through it
        u = self._scan_inputs(x, gamma) if inputs is None else inputs
        width = u.shape[1]
        dense = u.new_zeros(packed.batch_size * packed.window, width).index_copy(0, packed.rows, u)
        # `dense` is built here and used once: the scan may overwrite it.
        states = parallel_scan(dense.view(packed.batch_size, packed.window, width), lamb, packed.carry_mask,
                               overwrite=True)
        rows = packed.rows if select is None else packed.rows[select]
        states = states.reshape(-1, width)[rows]
        return self.dropout(self.out_proj.real_out(states.real, states.imag))
