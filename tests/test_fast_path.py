"""The fast path (packed positions, running-sum logits, masked or per-chunk MRL matmuls, evaluation
by counting) against the plain reference computation of model/reference.py."""
import pytest
import torch

from evaluation.evaluate import evaluate_ranks
from evaluation.metrics import exact_ranks
from model import FMRLRec, fmrlrec, pack_batch
from model.fp32_matmul import fast_fp32_matmul
from model.lru import parallel_scan, sequential_scan
from model.mrl import chunk_widths
from model.nested_loss import projected_chunk_count
from model.reference import reference_loss, reference_ranks, reference_scores
from tests.batches import random_training_batch

NUM_ITEMS = 40
LENGTH = 10  # not a power of two: the reference pads to 16, the fast path picks its own window
# Training-sequence lengths: 1 (a lone target whose input is padding), short ones, and longer than
# LENGTH (every position real). Row order is mixed on purpose.
LENGTHS = [4, 1, LENGTH + 3, 2, 7, LENGTH]
SIZE_LISTS = [[4, 8, 16], [3, 5, 16], [16]]


def training_batch(lengths=LENGTHS, length=LENGTH, seed=0):
    return random_training_batch(lengths, length, NUM_ITEMS, seed)


def make_model(sizes, num_blocks, fused, features=True, seed=0):
    """Dropout off (the two paths draw masks differently); every parameter randomised, imaginary
    parts and LayerNorm affines included, so that no path is exercised by zeros or ones only."""
    torch.manual_seed(seed)
    text = image = None
    if features:
        text, image = torch.randn(NUM_ITEMS + 1, 12), torch.randn(NUM_ITEMS + 1, 6)
        text[0] = image[0] = 0
    model = FMRLRec(NUM_ITEMS, sizes, text, image, num_blocks=num_blocks, dropout=0.0, attn_dropout=0.0,
                    r_min=0.3, r_max=0.9)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if 'imag' in name or 'norms' in name:
                parameter.normal_(0, 0.3).add_(1.0 if name.endswith('norms.0.weight') else 0.0)
    model.set_fast_path(fused_linears=fused)
    return model


def gradients(model, loss):
    """Every parameter's gradient; zeros where none flowed (the imaginary bias of an output map
    cannot reach Re(W h + b), so only the reference, which adds it and drops it, gives it one)."""
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: torch.zeros_like(p) if p.grad is None else p.grad.clone()
            for name, p in model.named_parameters()}


def assert_close_grads(fast, reference, rtol, atol):
    """Each gradient within rtol of its own scale: a chunk of width 2 (sizes 3, 5) normalised by
    an MRL LayerNorm amplifies float rounding a few hundred times, so elementwise tolerances
    would measure the conditioning of the test model rather than the fast path; a wrong or
    missing term is off by O(1)."""
    assert any(g.abs().sum() > 0 for name, g in reference.items() if 'weight_imag' in name)
    for name in reference:
        error = (fast[name] - reference[name]).abs().max()
        assert error <= rtol * reference[name].abs().max() + atol, f'{name}: max diff {error:.3g}'


@pytest.mark.parametrize('fused', [True, False, None], ids=['fused', 'chunked', 'auto'])
@pytest.mark.parametrize('num_blocks', [1, 2])
@pytest.mark.parametrize('sizes', SIZE_LISTS, ids=str)
def test_loss_per_size_losses_and_every_gradient_equal_the_reference(sizes, num_blocks, fused):
    model = make_model(sizes, num_blocks, fused)
    tokens, labels = training_batch()
    ref_loss, ref_per_size = reference_loss(model, tokens, labels)
    ref_grads = gradients(model, ref_loss)
    loss, per_size = model.loss(tokens, labels)
    grads = gradients(model, loss)
    assert per_size.shape == (len(sizes),)
    assert torch.allclose(per_size, ref_per_size, rtol=1e-5, atol=1e-5)
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert_close_grads(grads, ref_grads, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('num_blocks', [1, 2])
@pytest.mark.parametrize('sizes', [[4, 8, 16], [3, 5, 16]], ids=str)
def test_every_split_between_projected_and_factored_chunks_equals_the_reference(sizes, num_blocks):
    """projected_chunks = m: the first m chunks score against the projected table, the rest as
    (h_k W_k) F^T. All m, including none projected and all projected, give the reference's loss
    and gradients (the projection's bias included: its tail term only shifts rows of logits)."""
    model = make_model(sizes, num_blocks, None)
    tokens, labels = training_batch(seed=7)
    ref_loss, ref_per_size = reference_loss(model, tokens, labels)
    ref_grads = gradients(model, ref_loss)
    for projected in range(len(sizes) + 1):
        model.set_fast_path(projected_chunks=projected)
        loss, per_size = model.loss(tokens, labels)
        assert torch.allclose(per_size, ref_per_size, rtol=1e-5, atol=1e-5), projected
        assert_close_grads(gradients(model, loss), ref_grads, rtol=1e-4, atol=1e-5)


def test_the_cost_model_factors_the_wide_trailing_chunks_at_the_paper_shape():
    widths = chunk_widths([8, 16, 32, 64, 128, 256, 512, 1024])
    # Beauty at batch 32: ~220 labelled rows, 2048-d features, 12,102 table rows
    assert projected_chunk_count(widths, 220, 2048, 12102) == 6  # chunks of width 256 and 512 factored
    assert projected_chunk_count(widths, 20000, 2048, 12102) == 8  # huge batches: project everything
    assert projected_chunk_count(chunk_widths([64, 128]), 220, 2048, 12102) == 2  # narrow: project


def test_mean_over_sizes_and_the_id_only_model_equal_the_reference():
    model = make_model([4, 8, 16], 2, None, features=False)
    tokens, labels = training_batch(seed=3)
    ref_loss, _ = reference_loss(model, tokens, labels, reduction='mean')
    ref_grads = gradients(model, ref_loss)
    loss, _ = model.loss(tokens, labels, reduction='mean')
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert_close_grads(gradients(model, loss), ref_grads, rtol=1e-4, atol=1e-6)


def test_packing_skips_padding_but_keeps_the_padded_input_of_a_first_target():
    tokens, labels = training_batch()
    query = labels > 0
    packed = pack_batch(tokens, query)
    assert len(packed.query) == int(query.sum())  # one output per label
    assert len(packed.rows) == int((tokens > 0).sum()) + (query & (tokens == 0)).sum()
    assert packed.window == 16 and packed.batch_size == len(LENGTHS)
    short_tokens, short_labels = training_batch([3, 2, 1])
    assert pack_batch(short_tokens, short_labels > 0).window == 4  # the scan runs on 4 columns, not 16


@pytest.mark.parametrize('fused', [True, False], ids=['fused', 'chunked'])
@pytest.mark.parametrize('num_blocks', [1, 2])
@pytest.mark.parametrize('sizes', SIZE_LISTS, ids=str)
def test_evaluation_scores_and_ranks_equal_the_reference(sizes, num_blocks, fused):
    model = make_model(sizes, num_blocks, fused).eval()
    tokens, _ = training_batch(seed=5)
    targets = torch.randint(1, NUM_ITEMS + 1, (len(tokens),), generator=torch.Generator().manual_seed(1))
    expected = reference_scores(model, tokens)[:, :, -1]
    assert torch.allclose(model.scores(tokens), expected, rtol=1e-5, atol=1e-5)
    histories = torch.zeros(len(tokens), 1, dtype=torch.long)
    ranks = evaluate_ranks(model, tokens, targets, histories, len(sizes), batch_size=4, progress=False)
    assert torch.equal(ranks, exact_ranks(reference_ranks(model, tokens, targets)))  # random scores: no ties


@pytest.mark.parametrize('num_blocks', [1, 2])
def test_first_lru_inputs_per_item_give_the_hidden_states_per_position(num_blocks, monkeypatch):
    model = make_model([4, 8, 16], num_blocks, None).eval()
    tokens, _ = training_batch(seed=6)
    table = model.item_table().detach()
    per_item = model.hidden_states(tokens, table, model.first_lru_inputs(table))
    assert torch.allclose(per_item, model.hidden_states(tokens, table), rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(fmrlrec, 'LRU_INPUT_ROWS', 7)  # 41 rows in slices of 7, the last one short
    assert torch.allclose(model.hidden_states(tokens, table, model.first_lru_inputs(table)), per_item,
                          rtol=1e-5, atol=1e-6)
    model.train()  # the embedding dropout would make each position's inputs differ
    with pytest.raises(RuntimeError, match='for evaluation'):
        model.first_lru_inputs(table)


@pytest.mark.parametrize('num_blocks', [1, 2])
def test_bf16_autocast_stays_close_to_the_fp32_reference(num_blocks):
    sizes = [4, 8, 16]
    model = make_model(sizes, num_blocks, None)
    tokens, labels = training_batch(seed=2)
    ref_loss, ref_per_size = reference_loss(model, tokens, labels)
    ref_grads = gradients(model, ref_loss)
    ref_flat = torch.cat([ref_grads[n].flatten() for n in ref_grads])
    for projected in (None, 0, len(sizes)):  # the per-batch choice, every chunk factored, none
        model.set_fast_path(projected_chunks=projected)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss, per_size = model.loss(tokens, labels)
        assert loss.dtype == torch.float32
        assert torch.allclose(per_size, ref_per_size, rtol=3e-2, atol=3e-2)
        grads = gradients(model, loss)
        flat = torch.cat([grads[n].flatten().float() for n in ref_grads])
        assert torch.nn.functional.cosine_similarity(flat, ref_flat, dim=0) > 0.99
    # evaluation scores stay fp32 under autocast: the hidden states are bf16, the products are not
    model.eval()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        scores = model.scores(tokens)
    assert scores.dtype == torch.float32
    # Tolerance on each size's score scale: bf16 hidden states (8 significant bits) through the
    # blocks put the scores ~0.6% of it off here; a wrong path under autocast is off by O(scale).
    expected = reference_scores(model, tokens)[:, :, -1]
    for index, size in enumerate(sizes):
        scale = expected[index].abs().max()
        error = (scores[index] - expected[index]).abs().max()
        assert error <= 2e-2 * scale, (size, error.item(), scale.item())


def test_in_place_scan_of_evaluation_equals_the_recorded_scan():
    generator = torch.Generator().manual_seed(4)
    u = torch.complex(torch.randn(3, 8, 5, generator=generator), torch.randn(3, 8, 5, generator=generator))
    lamb = torch.polar(torch.rand(5, generator=generator), 6.28 * torch.rand(5, generator=generator))
    mask = torch.arange(8).unsqueeze(0) >= torch.tensor([[0], [3], [7]])  # left padding of 0, 3, 7
    expected = sequential_scan(u, lamb, mask)
    kept = u.clone()
    assert torch.allclose(parallel_scan(u, lamb, mask), expected, atol=1e-5)
    assert torch.equal(u, kept)  # without overwrite the input is left alone
    with torch.no_grad():
        states = parallel_scan(u, lamb, mask, overwrite=True)
    assert states.data_ptr() == u.data_ptr() and torch.allclose(states, expected, atol=1e-5)


@pytest.mark.parametrize('fused', [True, False], ids=['fused', 'chunked'])
def test_fp32_products_on_onednn_stay_exact(fused):
    """The trainer and the evaluator run their products under fast_fp32_matmul: still the reference."""
    precision = torch.backends.mkldnn.matmul.fp32_precision
    model = make_model([3, 5, 16], 2, fused)
    tokens, labels = training_batch(seed=6)
    ref_loss, ref_per_size = reference_loss(model, tokens, labels)
    ref_grads = gradients(model, ref_loss)
    with fast_fp32_matmul('cpu'):
        loss, per_size = model.loss(tokens, labels)
        grads = gradients(model, loss)
    assert torch.backends.mkldnn.matmul.fp32_precision == precision  # restored
    assert torch.allclose(per_size, ref_per_size, rtol=1e-5, atol=1e-5)
    assert_close_grads(grads, ref_grads, rtol=1e-4, atol=1e-5)


def test_onednn_probe_accepts_fp32_and_rejects_bf16_products(monkeypatch):
    """Had oneDNN rounded the probe's inputs to bf16, fast_fp32_matmul would leave products alone."""
    import model.fp32_matmul as fp32_matmul
    real_matmul = torch.Tensor.__matmul__
    for rounding, verdict in ((torch.bfloat16, False), (torch.float64, True)):
        monkeypatch.setattr(torch.Tensor, '__matmul__', lambda a, b, dtype=rounding: real_matmul(
            a.to(dtype), b.to(dtype)).to(a.dtype) if a.dtype == torch.float32 else real_matmul(a, b))
        assert fp32_matmul._probe() is verdict


def test_throughput_benchmark_runs_and_reports_the_issue_figures():
    """A tiny run of benchmarks/train_throughput.py (the real one takes minutes): every figure the
    issue asks for is there, and the fast evaluator ranks exactly as the reference does."""
    from benchmarks.train_throughput import main
    summary = main(['--users', '300', '--items', '200', '--feature_dim', '16', '--sizes', '4,8,16',
                    '--rounds', '1', '--fast_per_round', '1', '--eval_reference_batches', '1',
                    '--eval_batch_size', '32', '--matmul_size', '512', '--no-memory', '--json', '--bf16'])
    # Each figure is what its own timings and counts say (one round: the median of one ratio), so a
    # ratio taken the wrong way round, or of the wrong variant, fails; the times themselves vary.
    per_s, flops, rates = summary['train_seq_per_s'], summary['train_gflop_per_step'], summary['matmul_gflops']
    assert summary['train_speedup'] == pytest.approx(per_s['fast'] / per_s['reference'], rel=1e-9)
    assert summary['train_speedup_bf16'] == pytest.approx(per_s['fast_bf16'] / per_s['reference'], rel=1e-9)
    achieved = flops['fast'] * per_s['fast'] / 32  # GFLOP per step x steps per second (batch 32)
    assert summary['train_achieved_gflops']['fast'] == pytest.approx(achieved, rel=1e-9)
    assert summary['train_peak_fraction'] == pytest.approx(achieved / rates['fp32'], rel=1e-9)
    eval_per_s = summary['eval_users_per_s']
    assert summary['eval_speedup'] == pytest.approx(eval_per_s['fast'] / eval_per_s['reference'], rel=1e-9)
    assert eval_per_s['fast'] == pytest.approx(300 / summary['eval_full_pass_seconds']['fast'], rel=1e-9)
    assert summary['eval_fast_equals_reference_fraction'] == 1.0
    assert summary['eval_fast_reference_max_rank_difference'] == 0
    assert summary['train_gflop_per_step']['reference'] > summary['train_gflop_per_step']['fast'] > 0
    # bf16 moves the loss in its 4th-5th digit and the gradients by about 1% (docs/distributed.md)
    assert summary['bf16_effect']['loss_relative_change'] < 1e-3
    assert summary['bf16_effect']['gradient_relative_change'] < 5e-2


def test_flop_counter_counts_every_product_of_the_nested_loss():
    """The running-sum logits use in-place addmm_: the benchmark's counter must see those too.
    Forward of 3 sizes on q = 32 rows (already a multiple of the row bucket), N + 1 = 41 items:
    one product per chunk, 2 q c (N + 1) FLOPs each, summing to 2 q D (N + 1)."""
    from benchmarks.flops import count_matmul_flops
    from model.fp32_matmul import onednn_fp32_is_exact
    from model.nested_loss import nested_cross_entropy
    onednn_fp32_is_exact()  # its one-off probe runs products of its own: not part of the count
    hidden, table = torch.randn(32, 16), torch.randn(NUM_ITEMS + 1, 16)
    targets = torch.randint(1, NUM_ITEMS + 1, (32,))
    flops = count_matmul_flops(lambda: nested_cross_entropy(hidden, table, targets, [4, 4, 8]))
    assert flops == 2 * 32 * 16 * (NUM_ITEMS + 1)
