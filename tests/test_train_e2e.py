"""End to end on the demo: train, test every size, write the outputs, beat popularity; eval.py agrees."""
import json

import pytest
import yaml

import eval as eval_script
import train as train_script
from datasets.p5 import load_p5, split_examples
from evaluation.metrics import TIED_SHARE
from popularity_baseline import popularity_metrics

SIZES = '8,16,32,64'


@pytest.fixture(scope='module')
def demo_run(demo_root, tmp_path_factory):
    run = tmp_path_factory.mktemp('run')
    argv = ['--dataset_code', 'demo', '--data_root', str(demo_root), '--export_root', str(run),
            '--mrl_hidden_sizes', SIZES, '--num_epochs', '4', '--lr', '1e-3', '--no-use_tensorboard']
    return run, train_script.main(argv)


def test_demo_run_writes_every_output(demo_run):
    run, by_size = demo_run
    for name in ('args.yaml', 'models/best_acc_model.pth', 'models/checkpoint-recent.pth',
                 'test_metrics.json', 'test_mrl_metrics.json', 'logs/logs.csv'):
        assert (run / name).exists(), name
    mrl = json.loads((run / 'test_mrl_metrics.json').read_text())
    assert list(mrl) == ['8', '16', '32', '64'] and mrl == by_size
    assert set(mrl['8']) == {f'{m}@{k}' for m in ('Recall', 'NDCG', 'MRR') for k in (5, 10, 20, 50)} | {TIED_SHARE}
    assert json.loads((run / 'test_metrics.json').read_text()) == mrl['64']
    assert yaml.safe_load((run / 'args.yaml').read_text())['mrl_hidden_sizes'] == [8, 16, 32, 64]
    assert len((run / 'logs' / 'logs.csv').read_text().strip().splitlines()) == 5  # header + 4 epochs


def test_demo_learns_beyond_popularity(demo_run, demo_root):
    _, by_size = demo_run
    data = load_p5(demo_root / 'demo')
    splits = split_examples(data, 50)
    popular = popularity_metrics(splits['train_sequences'], data.num_items, splits['test'], [10])
    # This configuration reaches Recall@10 0.816 at size 64 against popularity's 0.0575 (14.2x) and
    # NDCG@10 0.600 (measured on torch 2.13 CPU, 1 and 2 threads alike). 13x and 0.55 leave ~8% for
    # other CPUs and libraries; test inputs without the validation item give 11.7x (0.67) and fail.
    assert by_size['64']['Recall@10'] >= 13 * popular['Recall@10'], (by_size['64'], popular)
    assert by_size['64']['NDCG@10'] >= 0.55, by_size['64']
    assert by_size['64']['NDCG@10'] > by_size['8']['NDCG@10']  # larger slices are better here


def test_eval_script_reproduces_test_metrics(demo_run, demo_root):
    run, by_size = demo_run
    (run / 'test_mrl_metrics.json').unlink()
    again = eval_script.main(['--export_root', str(run), '--device', 'cpu'])
    assert again == by_size
    plotted = eval_script.main(['--export_root', str(run), '--eval_mode', 'plot'])
    assert plotted == by_size and (run / 'plots' / 'NDCG_by_size.png').exists()


def test_eval_script_walks_experiments_for_unevaluated_runs(demo_run, tmp_path, capsys):
    eval_script.main(['--experiments_root', str(tmp_path)])
    assert 'no run under' in capsys.readouterr().out


def test_existing_run_folder_with_other_config_is_refused(demo_run, demo_root):
    run, _ = demo_run
    with pytest.raises(SystemExit, match='different configuration'):
        train_script.main(['--dataset_code', 'demo', '--data_root', str(demo_root), '--export_root', str(run),
                           '--mrl_hidden_sizes', '8,16', '--num_epochs', '1'])
