"""The hybrid item representation (--item_id_embedding): projection(features) + a learned, nested
ID table. The same guarantees as the other modalities: fast path == reference, the size-s model is
the first s dimensions, exports score exactly, runs resume and test end to end."""
import pytest
import torch

from config import parse_args
from deploy.export_format import build_export, export_bytes, load_export
from evaluation.evaluate import evaluate_ranks
from evaluation.metrics import exact_ranks
from fake_run import randomise
from model import FMRLRec
from model.reference import reference_loss, reference_ranks
from model.slicing import parameter_count, slice_model, sliced_state_dict
from runs.run_config import config_differences
from tests.batches import random_training_batch
from tests.test_export import assert_scores_match, catalogue, input_batch
from tests.test_fast_path import assert_close_grads, gradients

NUM_ITEMS = 40
SIZES = [4, 8, 16, 32]
MAX_LEN = 12


def hybrid_model(modalities=('text', 'image'), seed=0, num_blocks=2):
    generator = torch.Generator().manual_seed(seed)
    tables = {}
    for name, dim in (('text', 10), ('image', 6)):
        if name in modalities:
            tables[name] = torch.randn(NUM_ITEMS + 1, dim, generator=generator)
            tables[name][0] = 0
    model = FMRLRec(NUM_ITEMS, SIZES, tables.get('text'), tables.get('image'), num_blocks=num_blocks,
                    dropout=0.0, attn_dropout=0.0, item_id_embedding=True)
    return randomise(model, seed).train()


@pytest.mark.parametrize('modalities', [('text',), ('image',), ('text', 'image')], ids='+'.join)
def test_item_table_is_the_projection_plus_the_id_table(modalities):
    model = hybrid_model(modalities)
    assert model.is_hybrid and model.id_embedding.weight.shape == (NUM_ITEMS + 1, SIZES[-1])
    expected = model.projection(model.item_features) + model.id_embedding.weight
    assert torch.allclose(model.item_table(), expected, atol=1e-6)
    # Two items with identical features are told apart by their ID rows alone.
    with torch.no_grad():
        model.item_features[2] = model.item_features[1]
    table = model.item_table()
    assert not torch.allclose(table[1], table[2])
    assert torch.allclose(table[1] - table[2], model.id_embedding.weight[1] - model.id_embedding.weight[2], atol=1e-6)


@pytest.mark.parametrize('num_blocks', [1, 2])
def test_loss_and_every_gradient_equal_the_reference(num_blocks):
    model = hybrid_model(num_blocks=num_blocks)
    tokens, labels = random_training_batch([4, 1, 15, 2, 7, 12], MAX_LEN, NUM_ITEMS)
    ref_loss, ref_per_size = reference_loss(model, tokens, labels)
    ref_grads = gradients(model, ref_loss)
    loss, per_size = model.loss(tokens, labels)
    grads = gradients(model, loss)
    assert torch.allclose(per_size, ref_per_size, rtol=1e-5, atol=1e-5)
    assert_close_grads(grads, ref_grads, rtol=1e-4, atol=1e-5)
    # Both item parts learn: the ID rows of the batch's items and the projection.
    assert grads['id_embedding.weight'][tokens.unique()[1:]].abs().sum() > 0
    assert grads['projection.weight'].abs().sum() > 0


def test_evaluation_ranks_equal_the_reference():
    model = hybrid_model().eval()
    tokens = input_batch()[1:]  # users with at least one item
    targets = torch.arange(1, len(tokens) + 1)
    histories = torch.zeros(len(tokens), 1, dtype=torch.long)
    ranks = evaluate_ranks(model, tokens, targets, histories, len(SIZES), batch_size=3, progress=False)
    assert torch.equal(ranks, exact_ranks(reference_ranks(model, tokens, targets)))  # random scores: no ties


def test_the_size_s_model_is_the_first_s_dimensions():
    full = hybrid_model().eval()
    tokens = input_batch()
    scores = full.scores(tokens)
    for k, size in enumerate(SIZES, start=1):
        small = slice_model(full, size)
        assert small.is_hybrid and small.id_embedding.weight.shape == (NUM_ITEMS + 1, size)
        assert torch.equal(sliced_state_dict(full, size)['id_embedding.weight'], full.id_embedding.weight[:, :size])
        expected_parameters = parameter_count(SIZES[:k], 2, feature_dim=16, num_items=NUM_ITEMS, id_table=True)
        assert sum(p.numel() for p in small.parameters()) == expected_parameters
        got = small.scores(tokens)[-1]
        assert torch.allclose(got, scores[k - 1], rtol=1e-5, atol=1e-5 * scores[k - 1].abs().max())


@pytest.mark.parametrize('keep_features', [False, True])
def test_every_size_exports_and_scores_like_the_full_model(tmp_path, keep_features):
    full = hybrid_model().eval()
    for size in SIZES:
        path = tmp_path / f'hybrid_{size}.pt'
        bundle = build_export(full, size, catalogue(), MAX_LEN, keep_features)
        assert bundle['item_input'] == ('features' if keep_features else 'table')
        path.write_bytes(export_bytes(bundle))
        exported = load_export(path)
        assert exported.model.is_hybrid == keep_features
        assert_scores_match(full, exported, size)


def test_without_features_the_option_is_an_error():
    with pytest.raises(ValueError, match='ID-only already'):
        FMRLRec(NUM_ITEMS, SIZES, item_id_embedding=True)
    with pytest.raises(SystemExit):
        parse_args(['--use_language_encoder', 'False', '--use_img_encoder', 'False', '--item_id_embedding'])


def test_the_default_models_are_built_as_before():
    """The option changes nothing unless asked for: a text model draws the same initial weights
    with and without the new constructor argument, and holds no ID table."""
    text = torch.randn(NUM_ITEMS + 1, 10)
    torch.manual_seed(3)
    plain = FMRLRec(NUM_ITEMS, SIZES, text)
    torch.manual_seed(3)
    explicit = FMRLRec(NUM_ITEMS, SIZES, text, item_id_embedding=False)
    assert plain.id_embedding is None and not plain.is_hybrid
    for (name, a), (_, b) in zip(plain.state_dict().items(), explicit.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_run_saved_before_the_new_options_existed_still_resumes():
    """Options added later are absent from an old args.yaml: they count as their defaults."""
    current = vars(parse_args(['--dataset_code', 'demo', '--export_root', 'x']))
    old = {k: v for k, v in current.items()
           if k not in ('item_id_embedding', 'feature_preprocessing', 'text_fields')}
    assert config_differences(old, current) == []
    changed = dict(current, item_id_embedding=True)
    assert config_differences(old, changed) == ['item_id_embedding: False -> True']


def test_demo_run_trains_tests_and_resumes_with_the_hybrid(tmp_path, demo_root):
    import train as train_script
    run = tmp_path / 'hybrid_run'
    argv = ['--dataset_code', 'demo', '--data_root', str(demo_root), '--export_root', str(run),
            '--mrl_hidden_sizes', '8,16,32', '--num_epochs', '2', '--item_id_embedding', '--no-use_tensorboard',
            '--use_img_encoder', 'False']
    first = train_script.main(argv)
    assert set(first) == {'8', '16', '32'} and first['32']['NDCG@10'] > 0
    # a finished run resumed trains no further and tests the same best checkpoint again
    again = train_script.main(['--resume', str(run)])
    assert again == first
