"""The training loss over column chunks of the catalogue (model/chunked_loss.py) equals the reference:
every chunk size (one column, a chunk that does not divide N + 1, the whole catalogue), every split
between projected and factored size chunks, ID-only and hybrid items, and bf16 autocast; and the
chunk is chosen from the memory the unchunked loss would need."""
import pytest
import torch

from model import chunked_loss
from model.chunked_loss import item_chunk_for
from model.reference import reference_loss
from tests.test_fast_path import NUM_ITEMS, assert_close_grads, gradients, make_model, training_batch

CHUNKS = [1, 7, 16, NUM_ITEMS + 1]  # 41 columns: 7 and 16 leave a short last chunk


@pytest.mark.parametrize('item_chunk', CHUNKS)
@pytest.mark.parametrize('sizes', [[4, 8, 16], [3, 5, 16]], ids=str)
def test_chunked_loss_and_gradients_equal_the_reference_for_every_split(sizes, item_chunk, monkeypatch):
    model = make_model(sizes, 2, None)
    tokens, labels = training_batch(seed=3)
    ref_loss, ref_per_size = reference_loss(model, tokens, labels)
    ref_grads = gradients(model, ref_loss)
    used = []
    real = chunked_loss.ChunkedNestedCrossEntropy.apply
    monkeypatch.setattr(chunked_loss.ChunkedNestedCrossEntropy, 'apply', lambda *a: used.append(a[8]) or real(*a))  # a[8]: item_chunk
    model.set_fast_path(loss_item_chunk=item_chunk)
    for projected in range(len(sizes) + 1):
        model.set_fast_path(projected_chunks=projected)
        loss, per_size = model.loss(tokens, labels)
        assert torch.allclose(per_size, ref_per_size, rtol=1e-5, atol=1e-5), projected
        assert_close_grads(gradients(model, loss), ref_grads, rtol=1e-4, atol=1e-5)
    # a chunk as wide as the catalogue is the unchunked loss; narrower ones go through the chunks
    assert used == ([] if item_chunk > NUM_ITEMS else [item_chunk] * (len(sizes) + 1))


@pytest.mark.parametrize('hybrid', [False, True], ids=['id-only', 'hybrid'])
def test_chunked_loss_of_id_and_hybrid_items_equals_the_reference(hybrid):
    torch.manual_seed(0)
    from model import FMRLRec
    text = torch.randn(NUM_ITEMS + 1, 12) if hybrid else None
    model = FMRLRec(NUM_ITEMS, [4, 8, 16], text, None, num_blocks=1, dropout=0.0, attn_dropout=0.0,
                    item_id_embedding=hybrid)
    tokens, labels = training_batch(seed=5)
    ref_loss, ref_per_size = reference_loss(model, tokens, labels)
    ref_grads = gradients(model, ref_loss)
    model.set_fast_path(loss_item_chunk=6)
    loss, per_size = model.loss(tokens, labels)
    assert torch.allclose(per_size, ref_per_size, rtol=1e-5, atol=1e-5)
    assert_close_grads(gradients(model, loss), ref_grads, rtol=1e-4, atol=1e-5)


def test_chunked_and_unchunked_agree_under_bf16_autocast():
    model = make_model([4, 8, 16], 1, None)
    tokens, labels = training_batch(seed=9)
    results = {}
    for chunk in (None, 8):
        model.set_fast_path(loss_item_chunk=chunk)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss, per_size = model.loss(tokens, labels)
        results[chunk] = (per_size, gradients(model, loss))
    assert torch.allclose(results[None][0], results[8][0], rtol=2e-3, atol=2e-3)
    assert_close_grads(results[8][1], results[None][1], rtol=2e-2, atol=1e-4)


def test_the_chunk_follows_the_memory_the_unchunked_loss_needs(monkeypatch):
    monkeypatch.setattr(chunked_loss, 'free_memory', lambda device: 64 << 30)
    # Beauty's shape at D = 256: 6 sizes, ~224 rows, 12,102 columns -> 130 MB, unchunked
    assert item_chunk_for(6, 224, 12_102, 'cpu') is None
    # a million items: 10.7 GB unchunked -> chunks of CHUNK_BUDGET / ((M + 2) q 4 bytes) columns
    chunk = item_chunk_for(6, 224, 1_000_001, 'cpu')
    assert chunk == chunked_loss.CHUNK_BUDGET // (8 * 224 * 4)
    # little free memory chunks a mid-sized catalogue; a chunk never goes below MIN_CHUNK
    monkeypatch.setattr(chunked_loss, 'free_memory', lambda device: 100 << 20)
    assert item_chunk_for(6, 224, 12_102, 'cpu') is None  # 130 MB: below SMALL, never chunked
    assert item_chunk_for(6, 224, 100_001, 'cpu') == (100 << 20) // 8 // (8 * 224 * 4)  # an eighth of 100 MB
    monkeypatch.setattr(chunked_loss, 'free_memory', lambda device: 10 << 20)
    assert item_chunk_for(6, 224, 100_001, 'cpu') == chunked_loss.MIN_CHUNK
    # an explicit chunk wins; one as wide as the catalogue is the unchunked loss
    assert item_chunk_for(6, 224, 1_000_001, 'cpu', requested=50_000) == 50_000
    assert item_chunk_for(6, 224, 12_102, 'cpu', requested=20_000) is None
    assert chunked_loss.free_memory('cpu') > 0


def test_the_option_reaches_the_loss_and_a_negative_chunk_is_refused(tmp_path, capsys):
    from config import parse_args
    from tests.test_training_loop import first_batch, make_trainer
    chunked = make_trainer(tmp_path / 'a', ['--loss_item_chunk', '5'])
    plain = make_trainer(tmp_path / 'b')
    assert (chunked.model.fast_path.loss_item_chunk, plain.model.fast_path.loss_item_chunk) == (5, None)
    losses = [trainer.train_step(*first_batch(trainer))[0] for trainer in (chunked, plain)]
    assert torch.allclose(losses[0], losses[1], rtol=1e-6)
    with pytest.raises(SystemExit):
        parse_args(['--loss_item_chunk', '-1'])
    assert '--loss_item_chunk must be 0 (automatic) or a positive number' in capsys.readouterr().err
