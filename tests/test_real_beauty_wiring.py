"""The real Beauty sequences train once a text table exists (a random one here: the wiring, not the
quality), with the cache outside the read-only data folder."""
import numpy as np
import pytest
import torch

from config import parse_args
from datasets.feature_builds import ensure_feature_tables
from datasets.features import FeatureTableError, feature_cache_path, save_feature_table
from runs.run_inputs import build_model, load_data
from tests.conftest import SHARED_DATA
from trainer.trainer import Trainer

pytestmark = pytest.mark.skipif(not (SHARED_DATA / 'beauty').exists(), reason='real data folder absent')


def test_beauty_text_only_starts_training(tmp_path):
    encoder = 'BAAI/bge-large-en-v1.5'
    table = np.random.default_rng(0).normal(size=(12101, 24)).astype(np.float32)
    save_feature_table(feature_cache_path(None, 'text', encoder, tmp_path / 'features'), table, encoder)
    args = parse_args(['--dataset_code', 'beauty', '--data_root', str(SHARED_DATA), '--use_img_encoder', 'False',
                       '--feature_dir', str(tmp_path / 'features'), '--mrl_hidden_sizes', '8,16',
                       '--export_root', str(tmp_path / 'run')])
    data, splits, features = load_data(args)
    assert features['image'] is None and features['text'].shape == (12102, 24)
    assert splits['train'][0].shape == (22363, 50)
    model = build_model(args, data.num_items, features)
    assert model.projection.in_features == 24
    trainer = Trainer(args, model, splits, args.export_root, 'cpu', {})
    before = model.projection.weight.detach().clone()
    order = trainer.epoch_order(0)
    moved = []
    # The warm-up (100 steps) starts at lr 0, so the second step (lr 1e-4 * 1/100) is the first that moves.
    for step, lr in enumerate([0.0, 1e-6, 2e-6]):
        assert trainer.optimizer.param_groups[0]['lr'] == pytest.approx(lr, abs=1e-15), step
        loss, per_size = trainer.train_step(*trainer.batch(order[32 * step:32 * (step + 1)]))
        moved.append(not torch.equal(before, model.projection.weight))
    assert torch.isfinite(loss) and per_size.shape == (2,)
    assert moved == [False, True, True]


def test_missing_cache_with_an_unbuildable_encoder_names_the_problem(tmp_path):
    with pytest.raises((FeatureTableError, OSError, ValueError)) as error:
        ensure_feature_tables(SHARED_DATA / 'beauty', 12101, use_text=True, use_image=False,
                              language_encoder=str(tmp_path / 'no_such_encoder'), img_encoder='x',
                              feature_dir=tmp_path / 'features')
    assert 'no_such_encoder' in str(error.value)
    assert not (tmp_path / 'features' / 'text_no_such_encoder.npy').exists()
