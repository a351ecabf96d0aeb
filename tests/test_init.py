"""Initialisation, pinned by its distributions: every MRL linear chunk as nn.Linear with fan-in s_k,
the ID table as LRURec's truncated normal, and the LRU ring (|lambda|^2 uniform between r_min^2
and r_max^2, the phase uniform on [0, 2 pi)). Random draws are seeded, so each check is fixed; the
tolerances are several standard errors wide, and each wrong rule misses them by far more. The ring's
values are also pinned bit for bit to the released code's formulas."""
import math

import pytest
import torch

from model import FMRLRec
from model.lru import LRULayer, ring_init
from model.mrl import MRLLinear

SIZES = [16, 64, 256]  # chunks of width 16, 48, 192 reading 16, 64, 256 inputs


def uniform_ks_distance(samples):
    """Kolmogorov-Smirnov distance of `samples` (expected in [0, 1]) from the uniform law."""
    values = samples.double().sort().values
    n = len(values)
    above = torch.arange(1, n + 1, dtype=torch.float64) / n - values
    below = values - torch.arange(0, n, dtype=torch.float64) / n
    return max(above.max().item(), below.max().item())


def test_every_mrl_chunk_weight_is_uniform_with_the_chunks_own_fan_in():
    """nn.Linear's rule per chunk: U(-1/sqrt(s_k), 1/sqrt(s_k)), standard deviation bound/sqrt(3)."""
    torch.manual_seed(0)
    layer = MRLLinear(SIZES)
    for k, (weight, fan_in) in enumerate(zip(layer.weight, SIZES)):
        bound = 1 / math.sqrt(fan_in)
        assert weight.abs().max() <= bound, k
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1), k


def test_every_mrl_chunk_bias_is_uniform_with_the_chunks_own_fan_in():
    """Ten layers, so that even the first chunk (16 biases per layer) gives a usable sample."""
    torch.manual_seed(0)
    layers = [MRLLinear(SIZES) for _ in range(10)]
    for k, fan_in in enumerate(SIZES):
        biases = torch.cat([layer.bias[k].detach() for layer in layers])
        bound = 1 / math.sqrt(fan_in)
        assert biases.abs().max() <= bound, k
        assert biases.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15), k
        assert biases.abs().max() >= 0.9 * bound, k


def test_complex_maps_start_with_zero_imaginary_weights_and_biases():
    torch.manual_seed(0)
    layer = MRLLinear(SIZES, complex_weights=True)
    assert all(torch.count_nonzero(p) == 0 for p in [*layer.weight_imag, *layer.bias_imag])
    assert all(p.std() > 0 for p in [*layer.weight, *layer.bias])


@pytest.mark.parametrize('hybrid', [False, True], ids=['id-only', 'hybrid'])
def test_id_table_is_a_truncated_normal_of_std_002_with_a_zero_padding_row(hybrid):
    """N(0, 0.02^2) cut at +-0.04 (two standard deviations): the standard deviation of the cut law
    is 0.02 * sqrt(1 - 2 * 2 phi(2) / (2 Phi(2) - 1)) = 0.01759."""
    torch.manual_seed(0)
    features = torch.randn(2001, 4) if hybrid else None
    model = FMRLRec(2000, [8, 32], text_features=features, item_id_embedding=hybrid)
    table = model.id_embedding.weight.detach()
    assert torch.count_nonzero(table[0]) == 0
    rows = table[1:]
    assert rows.abs().max() <= 0.04 and rows.abs().max() >= 0.039
    phi, big_phi = math.exp(-2) / math.sqrt(2 * math.pi), 0.5 * (1 + math.erf(2 / math.sqrt(2)))
    expected_std = 0.02 * math.sqrt(1 - 4 * phi / (2 * big_phi - 1))
    assert rows.std().item() == pytest.approx(expected_std, rel=0.02)
    assert rows.mean().abs() < 0.001


@pytest.mark.parametrize('r_min, r_max', [(0.0, 0.1), (0.4, 0.9)])
def test_ring_moduli_squared_are_uniform_between_r_min_squared_and_r_max_squared(r_min, r_max):
    """The LRU paper's ring: uniform over the annulus' area, i.e. |lambda|^2 uniform (a modulus
    uniform in [r_min, r_max] would put too much mass near the inner circle)."""
    nu_log, _, gamma_log = ring_init(20000, r_min, r_max, torch.Generator().manual_seed(0))
    modulus = torch.exp(-torch.exp(nu_log.double()))
    assert modulus.min() >= r_min - 1e-6 and modulus.max() <= r_max + 1e-6
    assert uniform_ks_distance((modulus ** 2 - r_min ** 2) / (r_max ** 2 - r_min ** 2)) < 0.015
    assert torch.allclose(torch.exp(gamma_log.double()), torch.sqrt(1 - modulus ** 2), atol=1e-5)


def test_ring_phases_are_uniform_on_the_whole_circle():
    _, theta_log, _ = ring_init(20000, 0.0, 0.1, torch.Generator().manual_seed(1))
    theta = torch.exp(theta_log.double())
    assert theta.min() >= 0 and theta.max() <= 2 * math.pi
    assert uniform_ks_distance(theta / (2 * math.pi)) < 0.015
    assert theta.max() > 0.99 * 2 * math.pi  # the whole circle, not half of it


def test_the_lru_layer_draws_its_eigenvalues_on_its_own_ring():
    torch.manual_seed(0)
    layer = LRULayer([8, 512], r_min=0.5, r_max=0.8)
    lamb, gamma = layer.lambda_gamma()
    modulus = lamb.abs().double()
    assert modulus.min() >= 0.5 - 1e-5 and modulus.max() <= 0.8 + 1e-5
    assert uniform_ks_distance(((modulus ** 2 - 0.25) / (0.64 - 0.25)).clamp(0, 1)) < 0.07  # 512 draws
    assert torch.allclose(gamma.double(), torch.sqrt(1 - modulus ** 2), atol=1e-5)


def released_ring_init(width, r_min, r_max, generator):
    """The released code's LRU ring, formula for formula in float32: |lambda| is the modulus of the
    complex64 exp(-exp(nu_log) + i exp(theta_log)), not exp(-exp(nu_log))."""
    u1 = torch.rand(width, generator=generator)
    u2 = torch.rand(width, generator=generator)
    nu_log = torch.log(-0.5 * torch.log(u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2))
    theta_log = torch.log(u2 * torch.tensor(math.pi) * 2)
    diag_lambda = torch.exp(torch.complex(-torch.exp(nu_log), torch.exp(theta_log)))
    gamma_log = torch.log(torch.sqrt(1 - torch.abs(diag_lambda) ** 2))
    return nu_log, theta_log, gamma_log


@pytest.mark.parametrize('r_min, r_max', [(0.0, 0.1), (0.4, 0.9), (0.8, 0.99)])
@pytest.mark.parametrize('width', [1, 7, 1024, 20000])
def test_the_ring_equals_the_released_codes_formulas_bit_for_bit(width, r_min, r_max):
    ours = ring_init(width, r_min, r_max, torch.Generator().manual_seed(3))
    released = released_ring_init(width, r_min, r_max, torch.Generator().manual_seed(3))
    for name, mine, theirs in zip(('nu_log', 'theta_log', 'gamma_log'), ours, released):
        assert mine.dtype == theirs.dtype == torch.float32, name
        assert torch.equal(mine, theirs), (name, int((mine != theirs).sum()))


def test_the_released_modulus_differs_in_the_last_bit_from_exp_of_minus_nu():
    """Why the check above computes |lambda| the released way: exp(-exp(nu_log)), the same number in
    exact arithmetic, rounds some of these gammas differently."""
    nu_log, _, gamma_log = released_ring_init(20000, 0.4, 0.9, torch.Generator().manual_seed(3))
    shortcut = torch.log(torch.sqrt(1 - torch.exp(-torch.exp(nu_log)) ** 2))
    assert not torch.equal(shortcut, gamma_log)
    assert torch.allclose(shortcut, gamma_log, rtol=1e-5, atol=0)


def test_the_lru_layers_gamma_row_is_the_released_formula_of_its_own_nu_and_theta_rows():
    torch.manual_seed(0)
    nu_log, theta_log, gamma_log = LRULayer([8, 512], r_min=0.4, r_max=0.9).params_log.detach()
    modulus = torch.abs(torch.exp(torch.complex(-torch.exp(nu_log), torch.exp(theta_log))))
    assert torch.equal(gamma_log, torch.log(torch.sqrt(1 - modulus ** 2)))
