"""The model's defining properties: nesting end to end, the scan, the MRL layers, the loss."""
import pytest
import torch
import torch.nn.functional as F

from model import FMRLRec, pack_batch, pack_last_position
from model.lru import LRULayer, parallel_scan, ring_init, sequential_scan
from model.mrl import MRLLayerNorm, MRLLinear, chunk_widths
from tests.batches import random_training_batch

SIZES = [4, 8, 16]
NUM_ITEMS = 30


def left_padded_batch(lengths, length, num_items=NUM_ITEMS, seed=0):
    return random_training_batch(lengths, length, num_items, seed)


def make_model(num_blocks=2, features=True, sizes=SIZES, seed=0):
    torch.manual_seed(seed)
    text = image = None
    if features:
        text, image = torch.randn(NUM_ITEMS + 1, 12), torch.randn(NUM_ITEMS + 1, 6)
        text[0] = 0
        image[0] = 0
    model = FMRLRec(NUM_ITEMS, sizes, text, image, num_blocks=num_blocks, dropout=0.0, attn_dropout=0.0)
    with torch.no_grad():  # complex maps start real; give them imaginary parts so those paths count
        for name, parameter in model.named_parameters():
            if 'imag' in name:
                parameter.normal_(0, 0.2)
    return model.eval()


def test_chunk_widths():
    assert chunk_widths([8, 16, 32, 64]) == [8, 8, 16, 32]
    assert chunk_widths([3]) == [3]


@pytest.mark.parametrize('fused', [True, False])
def test_mrl_linear_is_block_lower_triangular(fused):
    layer = MRLLinear([2, 5, 9])
    layer.fused = fused
    x = torch.randn(7, 9)
    out = layer(x)
    for k, s in enumerate([2, 5, 9]):
        bumped = x.clone()
        bumped[:, s:] += torch.randn(7, 9 - s)
        assert torch.allclose(layer(bumped)[:, :s], out[:, :s], atol=1e-6), f'chunk up to {s} leaked'
    dense = layer.dense_weight()
    assert torch.count_nonzero(dense[:2, 2:]) == 0 and torch.count_nonzero(dense[2:5, 5:]) == 0
    assert sum(p.numel() for p in layer.parameters()) == 2 * 2 + 3 * 5 + 4 * 9 + 9


def test_mrl_linear_fused_equals_chunked():
    layer = MRLLinear([3, 8, 12])
    x = torch.randn(5, 12)
    layer.fused = True
    fused = layer(x)
    layer.fused = False
    assert torch.allclose(fused, layer(x), atol=1e-6)


@pytest.mark.parametrize('fused', [True, False])
def test_complex_maps_match_complex_arithmetic(fused):
    layer = MRLLinear([2, 6], complex_weights=True)
    layer.fused = fused  # both products: the CPU's fp32 default would test the chunked one only
    with torch.no_grad():
        for p in list(layer.weight_imag) + list(layer.bias_imag):
            p.normal_()
    weight = torch.complex(layer.dense_weight(), layer.dense_weight(imag=True))
    bias = torch.complex(layer.dense_bias(), layer.dense_bias(imag=True))
    x = torch.randn(4, 6)
    expected = x.to(torch.cfloat) @ weight.t() + bias
    got = layer.complex_in(x)
    assert torch.allclose(got[:, :6], expected.real, atol=1e-5) and torch.allclose(got[:, 6:], expected.imag, atol=1e-5)
    h = torch.randn(4, 6, dtype=torch.cfloat)
    assert torch.allclose(layer.real_out(h.real, h.imag), (h @ weight.t() + bias).real, atol=1e-5)


def test_complex_layer_starts_real_like_released_code():
    layer = MRLLinear([4, 8], complex_weights=True)
    assert all(torch.count_nonzero(p) == 0 for p in layer.weight_imag)
    assert all(torch.count_nonzero(p) > 0 for p in layer.weight)


def test_mrl_layer_norm_normalises_each_chunk_separately():
    norm = MRLLayerNorm([3, 8])
    x = torch.randn(4, 8) * 5 + 2
    out = norm(x)
    for a, b in [(0, 3), (3, 8)]:
        assert torch.allclose(out[:, a:b], F.layer_norm(x[:, a:b], (b - a,)), atol=1e-5)
    assert not torch.allclose(out, F.layer_norm(x, (8,)), atol=1e-3)


def test_ring_init_eigenvalues_lie_on_the_ring():
    nu_log, theta_log, gamma_log = ring_init(2000, 0.4, 0.9, torch.Generator().manual_seed(1))
    modulus = torch.exp(-torch.exp(nu_log))
    assert modulus.min() >= 0.4 - 1e-5 and modulus.max() <= 0.9 + 1e-5
    assert torch.allclose(torch.exp(gamma_log), torch.sqrt(1 - modulus ** 2), atol=1e-6)
    assert torch.exp(theta_log).max() <= 2 * torch.pi + 1e-5


@pytest.mark.parametrize('length', [1, 2, 8, 64])
def test_parallel_scan_equals_step_by_step_recurrence(length):
    generator = torch.Generator().manual_seed(length)
    batch, width = 6, 5
    u = torch.complex(torch.randn(batch, length, width, generator=generator),
                      torch.randn(batch, length, width, generator=generator))
    lamb = torch.polar(torch.rand(width, generator=generator), 6.28 * torch.rand(width, generator=generator))
    real_lengths = torch.randint(0, length + 1, (batch,), generator=generator)
    real_lengths[0] = length
    mask = torch.arange(length).unsqueeze(0) >= (length - real_lengths).unsqueeze(1)  # left padding
    assert torch.allclose(parallel_scan(u, lamb, mask), sequential_scan(u, lamb, mask), atol=1e-5)


def test_padding_never_leaks_into_real_positions():
    tokens, _ = left_padded_batch([4, 4], 8)
    model = make_model(num_blocks=2)
    tokens[1, :4] = torch.tensor([0, 0, 0, 0])
    a = model.scores(tokens)
    shifted = torch.zeros(2, 16, dtype=torch.long)
    shifted[:, -8:] = tokens  # more padding in front changes nothing
    assert torch.allclose(a, model.scores(shifted), atol=1e-5)


def test_parallel_scan_rejects_non_power_of_two():
    with pytest.raises(ValueError, match='power-of-two'):
        parallel_scan(torch.zeros(1, 3, 2, dtype=torch.cfloat), torch.ones(2, dtype=torch.cfloat),
                      torch.ones(1, 3, dtype=torch.bool))


def _perturb_beyond(size):
    """Forward pre-hooks that add noise to every input dim >= size of the nested modules."""
    def hook(module, inputs):
        x = inputs[0].clone()
        x[..., size:] += 3 * torch.randn_like(x[..., size:])
        return (x,) + tuple(inputs[1:])
    return hook


@pytest.mark.parametrize('num_blocks', [1, 2])
def test_size_s_scores_ignore_every_dim_beyond_s(num_blocks):
    """Nesting end to end: noise in dims >= s at every layer input and in every parameter that only
    serves dims >= s leaves the size-s scores unchanged."""
    tokens, _ = left_padded_batch([3, 9, 12], 10)
    for index, size in enumerate(SIZES[:-1]):
        model = make_model(num_blocks)
        before_all = model.scores(tokens)
        before = before_all[index]
        handles = [m.register_forward_pre_hook(_perturb_beyond(size)) for m in model.modules()
                   if isinstance(m, (MRLLinear, MRLLayerNorm, LRULayer))]
        with torch.no_grad():
            model.projection.weight[size:] += torch.randn_like(model.projection.weight[size:])
            model.projection.bias[size:] += 1.0
            for block in model.blocks:
                block.lru.params_log[:, size:] += 0.5
                for layer in [block.lru.in_proj, block.lru.out_proj, block.feed_forward.gate,
                              block.feed_forward.w_1, block.feed_forward.w_2]:
                    for k in range(index + 1, len(SIZES)):
                        layer.weight[k].add_(torch.randn_like(layer.weight[k]))
                for norm in (block.input_norm, block.post_norm):
                    for k in range(index + 1, len(SIZES)):
                        norm.norms[k].weight.add_(1.0)
        after = model.scores(tokens)
        for handle in handles:
            handle.remove()
        assert torch.allclose(before, after[index], atol=1e-4), f'size {size} changed'
        # The perturbation is real: it moves the scores of the next size up (dims just past s
        # count there) and of the largest, each compared with its own scores from before.
        for larger in (index + 1, len(SIZES) - 1):
            assert (after[larger] - before_all[larger]).abs().max() > 0.1 * before_all[larger].abs().max(), larger


def test_running_sum_logits_equal_per_size_matmuls():
    model = make_model()
    hidden = torch.randn(7, SIZES[-1])
    table = model.item_table()
    for size, logits in zip(SIZES, model.size_logits(hidden, table)):
        assert torch.allclose(logits, hidden[:, :size] @ table[:, :size].t(), atol=1e-5)


@pytest.mark.parametrize('reduction', ['sum', 'mean'])
def test_loss_is_sum_or_mean_of_per_size_cross_entropies(reduction):
    model = make_model(num_blocks=1)
    tokens, labels = left_padded_batch([2, 5, 11], 8)
    loss, per_size = model.loss(tokens, labels, reduction)
    query = labels > 0
    hidden = model.hidden_states(pack_batch(tokens, query))
    table = model.item_table()
    expected = torch.stack([F.cross_entropy(hidden[:, :s] @ table[:, :s].t(), labels[query]) for s in SIZES])
    assert torch.allclose(per_size, expected, atol=1e-5)
    total = expected.sum() if reduction == 'sum' else expected.mean()
    assert torch.allclose(loss, total, atol=1e-5)


def test_empty_context_target_is_trained():
    """A short sequence's first item is a target whose input is padding (docs/method.md, Data)."""
    tokens, labels = left_padded_batch([3], 6)
    assert tokens[0, 3].item() == 0 and labels[0, 3].item() > 0
    packed = pack_batch(tokens, labels > 0)
    assert len(packed.query) == 3 and packed.tokens[packed.query[0]].item() == 0


def test_id_only_and_single_modalities():
    torch.manual_seed(0)
    text, image = torch.randn(NUM_ITEMS + 1, 12), torch.randn(NUM_ITEMS + 1, 6)
    id_only = FMRLRec(NUM_ITEMS, SIZES)
    assert id_only.projection is None and id_only.id_embedding.weight.shape == (NUM_ITEMS + 1, 16)
    assert FMRLRec(NUM_ITEMS, SIZES, text_features=text).projection.in_features == 12
    assert FMRLRec(NUM_ITEMS, SIZES, image_features=image).projection.in_features == 6
    assert FMRLRec(NUM_ITEMS, SIZES, text, image).projection.in_features == 18
    tokens, labels = left_padded_batch([4, 6], 5)
    loss, _ = id_only.loss(tokens, labels)
    loss.backward()
    assert id_only.id_embedding.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='does not match'):
        FMRLRec(NUM_ITEMS, SIZES, text_features=torch.randn(NUM_ITEMS, 12))


def test_frozen_features_are_not_trained_nor_saved():
    model = make_model()
    names = [n for n, _ in model.named_parameters()]
    assert not any('item_features' in n for n in names)
    assert 'item_features' not in model.state_dict()


def test_pack_last_position_computes_only_needed_window():
    tokens = torch.tensor([[0, 0, 0, 0, 0, 3, 4], [0, 0, 0, 0, 0, 0, 5]])
    packed = pack_last_position(tokens)
    assert packed.window == 2 and packed.tokens.tolist() == [3, 4, 5] and len(packed.query) == 2


def test_loss_and_scores_take_tokens_or_the_packed_batch_a_caller_built():
    """The trainer packs on the host and calls forward (what DistributedDataParallel wraps); the
    evaluator packs too: each gives what the plain (B, L) call gives."""
    model = make_model(num_blocks=2)
    tokens, labels = left_padded_batch([2, 5, 11], 8)
    query = labels > 0
    loss, per_size = model.loss(tokens, labels, 'mean')
    packed_loss, packed_per_size = model(pack_batch(tokens, query), labels[query], 'mean')
    assert torch.allclose(packed_loss, loss, rtol=0, atol=1e-6) and torch.allclose(packed_per_size, per_size, rtol=0, atol=1e-6)
    assert torch.allclose(loss, per_size.mean(), atol=1e-6) and per_size.shape == (len(SIZES),)
    scores = model.scores(tokens)
    assert scores.shape == (len(SIZES), len(tokens), NUM_ITEMS + 1) and scores.dtype == torch.float32
    assert torch.allclose(model.scores(pack_last_position(tokens), model.item_table()), scores, rtol=0, atol=1e-6)


def test_fast_path_settings_reach_every_nested_linear_and_unknown_ones_are_refused():
    model = make_model(num_blocks=2)
    linears = [m for m in model.modules() if isinstance(m, MRLLinear)]
    assert len(linears) == 2 * 5 and all(layer.fused is None for layer in linears)
    model.set_fast_path(fused_linears=False, projected_chunks=1)
    assert all(layer.fused is False for layer in linears) and model.fast_path.projected_chunks == 1
    model.set_fast_path(projected_chunks=None)  # one setting changed, the others kept
    assert all(layer.fused is False for layer in linears)
    with pytest.raises(TypeError, match="no fast-path setting 'fused'"):
        model.set_fast_path(fused=True)
