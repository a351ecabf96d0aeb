"""reproduce.py's presets, its comparison report, the results table, and the second protocol."""
import json
import shutil

import pytest

import eval as eval_script
import reproduce
from config import parse_args
from datasets.demo import DEMO_ENCODER
from datasets.features import feature_cache_path
from scripts import results_table


def test_presets_are_the_papers_best_configuration():
    args = parse_args(reproduce.preset_argv('clothing', 'full', 'now'))
    assert args.mrl_hidden_sizes[-1] == 1024 and args.lru_num_blocks == 2
    assert (args.lru_r_min, args.lru_r_max) == (0.1, 0.2) and args.weight_decay == 0.01
    assert args.use_language_encoder and args.use_img_encoder
    text_only = parse_args(reproduce.preset_argv('beauty', 'text', 'now') + ['--lr', '1e-3'])
    assert text_only.use_language_encoder and not text_only.use_img_encoder and text_only.lr == 1e-3
    id_only = parse_args(reproduce.preset_argv('toys', 'id', 'now'))
    assert not id_only.use_language_encoder and not id_only.use_img_encoder


def test_dry_run_prints_commands_without_training(capsys):
    assert reproduce.main(['--all', '--dry_run']) == []
    out = capsys.readouterr().out
    assert out.count('python train.py --config presets/') == 4 and 'lru_r_min: 0.1' in out


@pytest.fixture(scope='module')
def fake_beauty_run(demo_root, tmp_path_factory):
    """A tiny stand-in 'beauty' folder (the demo's files) trained through reproduce.py, text only."""
    root = tmp_path_factory.mktemp('data')
    shutil.copytree(demo_root / 'demo', root / 'beauty')
    encoder = 'BAAI/bge-large-en-v1.5'
    shutil.copy(feature_cache_path(root / 'beauty', 'text', DEMO_ENCODER), feature_cache_path(root / 'beauty', 'text', encoder))
    sidecar = feature_cache_path(root / 'beauty', 'text', encoder).with_suffix('.json')
    meta = json.loads(feature_cache_path(root / 'beauty', 'text', DEMO_ENCODER).with_suffix('.json').read_text())
    sidecar.write_text(json.dumps({**meta, 'encoder': encoder}))
    run = tmp_path_factory.mktemp('exp') / 'beauty_text'
    reports = reproduce.main(['--dataset_code', 'beauty', '--ablation', 'text', '--data_root', str(root),
                              '--mrl_hidden_sizes', '8,16,32', '--lru_num_blocks', '1', '--num_epochs', '1',
                              '--export_root', str(run), '--no-use_tensorboard'])
    return run, reports


def test_reproduce_writes_the_comparison_with_the_paper(fake_beauty_run):
    run, reports = fake_beauty_run
    text = (run / 'comparison.md').read_text()
    assert text.strip() == reports[0].strip()
    assert 'text only (paper ablation)' in text and '0.0449' in text and '| 32 |' in text


def test_results_table_and_masked_protocol(fake_beauty_run, capsys):
    run, _ = fake_beauty_run
    masked = eval_script.main(['--export_root', str(run), '--mask_history', 'True'])
    plain = json.loads((run / 'test_mrl_metrics.json').read_text())
    assert json.loads((run / 'test_mrl_metrics_masked.json').read_text()) == masked
    assert masked['32']['Recall@50'] >= plain['32']['Recall@50']  # masking seen items never hurts here
    table = results_table.main(['--root', str(run.parent), '--curves'])
    assert 'beauty_text' in table and '| text |' in table and '0.0859' in table
    assert 'training curve' in table and '\n| 1 | ' in table  # one epoch in the curve


def test_every_run_is_set_beside_the_closest_paper_row():
    from utils.paper import PAPER_ABLATIONS, PAPER_FMRLREC, PAPER_LRUREC, paper_reference
    assert paper_reference('beauty', 'text') == ('fMRLRec text only (paper ablation)', PAPER_ABLATIONS[('beauty', 'text')])
    assert paper_reference('sports', 'id')[1] == PAPER_LRUREC['sports']  # no ID ablation there: LRURec
    label, row = paper_reference('clothing', 'id')  # neither: the full model, labelled as such
    assert row == PAPER_FMRLREC['clothing'] and 'no such ablation' in label
    assert paper_reference('unknown', 'id') == (None, None)
