"""Bad input stops train.py with one message naming the file, the line and the fix, and leaves
nothing half-written; a non-finite loss stops training and keeps the last good checkpoint."""
import gzip
import json
import shutil
import warnings

import numpy as np
import pytest
import torch
import yaml

import train as train_script
from datasets.features import feature_cache_path
from datasets.p5 import DataError, DataWarning, read_meta
from model.fmrlrec import FMRLRec
from runs.run_folder import BEST_CHECKPOINT, RECENT_CHECKPOINT

SMALL = ['--mrl_hidden_sizes', '8,16', '--train_batch_size', '128', '--val_batch_size', '256',
         '--test_batch_size', '256', '--no-use_tensorboard']


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """These runs are tiny; on a shared 2-core machine two OpenMP threads make them 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(data_root, run, *extra, code='demo'):
    return train_script.main(['--dataset_code', code, '--data_root', str(data_root), '--export_root', str(run),
                              *SMALL, *extra])


def refused(data_root, run, *extra, code='demo'):
    """The SystemExit message of a train.py run that must stop; the run folder must not exist."""
    with pytest.raises(SystemExit) as stopped:
        train(data_root, run, *extra, code=code)
    return str(stopped.value)


@pytest.fixture(scope='module')
def finished_run(demo_root, tmp_path_factory):
    run = tmp_path_factory.mktemp('finished') / 'run'
    train(demo_root, run, '--num_epochs', '1')
    return run


def test_resuming_a_finished_run_trains_no_more(finished_run, tmp_path, capsys):
    run = tmp_path / 'run'
    shutil.copytree(finished_run, run)
    before = (run / 'test_mrl_metrics.json').read_text()
    train_script.main(['--resume', str(run)])
    assert f'resumed {run} after epoch 1 (step 10)' in capsys.readouterr().out
    assert len((run / 'logs' / 'logs.csv').read_text().splitlines()) == 2
    assert torch.load(run / 'models' / RECENT_CHECKPOINT, weights_only=False)['global_step'] == 10
    assert json.loads((run / 'test_mrl_metrics.json').read_text()) == json.loads(before)


def copy_demo(demo_root, tmp_path):
    shutil.copytree(demo_root / 'demo', tmp_path / 'data' / 'demo')
    return tmp_path / 'data'


@pytest.mark.parametrize('bad_line, message', [
    ('7 1 2 x', 'sequential_data.txt, line 2: not a list of integer ids'),
    ('7 1 2', 'sequential_data.txt, line 2: user 7 has 2 items; leave-one-out needs at least 3'),
    ('7 1 2 3 999', 'sequential_data.txt, line 2: item id 999 is outside 1..320'),
])
def test_bad_sequence_lines_name_file_line_and_fix(demo_root, tmp_path, bad_line, message):
    data_root = copy_demo(demo_root, tmp_path)
    sequences = data_root / 'demo' / 'sequential_data.txt'
    lines = sequences.read_text().splitlines()
    sequences.write_text('\n'.join([lines[0], bad_line] + lines[2:]) + '\n')
    error = refused(data_root, tmp_path / 'run')
    assert error.startswith('error: ') and message in error, error
    assert not (tmp_path / 'run').exists()  # nothing half-written


def test_missing_sequence_file_says_where_to_put_it(demo_root, tmp_path):
    data_root = tmp_path / 'data'
    (data_root / 'beauty').mkdir(parents=True)
    shutil.copy(demo_root / 'demo' / 'datamaps.json', data_root / 'beauty')
    error = refused(data_root, tmp_path / 'run', code='beauty')
    assert 'beauty/sequential_data.txt is missing' in error and 'docs/data.md' in error
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('damage, message', [
    ('nan', 'holds NaN or infinite values in 1 rows (item ids 5)'),
    ('rows', 'has shape (319, 64) but the dataset has 320 items'),
])
def test_bad_feature_tables_are_refused(demo_root, tmp_path, damage, message):
    data_root = copy_demo(demo_root, tmp_path)
    path = feature_cache_path(data_root / 'demo', 'text', 'demo-synthetic')
    table = np.load(path)
    if damage == 'nan':
        table[4, 3] = np.nan
    else:
        table = table[:-1]
    np.save(path, table)
    error = refused(data_root, tmp_path / 'run')
    assert str(path) in error and message in error and 'Rebuild the features' in error, error
    assert not (tmp_path / 'run').exists()


def test_json_meta_is_read_with_a_warning_and_broken_lines_are_named(tmp_path):
    path = tmp_path / 'meta.json.gz'
    with gzip.open(path, 'wt') as handle:
        handle.write("{'asin': 'A1', 'title': 'x', 'sale': True}\n")
        handle.write(json.dumps({'asin': 'A2', 'price': None, 'sale': False}) + '\n')
    with pytest.warns(DataWarning, match=r'meta.json.gz: 1 line\(s\) in JSON.*first: line 2'):
        meta = read_meta(path)
    assert meta['A2'] == {'asin': 'A2', 'price': None, 'sale': False} and meta['A1']['sale'] is True
    with gzip.open(path, 'wt') as handle:
        handle.write("{'asin': 'A1'}\n{'asin': 'A2', 'title': 'cut\n")
    with pytest.raises(DataError, match=r"meta.json.gz, line 2: neither a Python dict literal nor JSON.*restore"):
        read_meta(path)
    path.write_bytes(gzip.compress(b"{'asin': 'A1'}\n" * 50)[:-12])
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        with pytest.raises(DataError, match='not a complete gzip file. Restore it'):
            read_meta(path)


def test_unreadable_run_config_is_reported(demo_root, tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'args.yaml').write_text('{broken: [yaml\n')
    error = refused(demo_root, run)
    assert 'args.yaml is not a run configuration written by train.py' in error
    assert (run / 'args.yaml').read_text() == '{broken: [yaml\n'


def test_resume_of_a_folder_without_a_run_is_refused(demo_root, tmp_path):
    error = refused(demo_root, tmp_path / 'x', '--resume', str(tmp_path / 'nothing'))
    assert 'no run there' in error and '--resume auto' in error


@pytest.mark.parametrize('damage, message', [
    ('truncate', 'is corrupt or not a checkpoint'),
    ('config', "trained with another configuration (lru_num_blocks: 2 -> 1)"),
    ('weights', 'does not fit this model'),
])
def test_bad_recent_checkpoints_are_reported_and_left_alone(finished_run, tmp_path, damage, message):
    run = tmp_path / 'run'
    shutil.copytree(finished_run, run)
    recent = run / 'models' / RECENT_CHECKPOINT
    if damage == 'truncate':
        recent.write_bytes(recent.read_bytes()[:1000])
    else:
        checkpoint = torch.load(recent, weights_only=False)
        if damage == 'config':
            checkpoint['config']['lru_num_blocks'] = 2
        else:
            checkpoint['model_state_dict'] = {k: v[:1] for k, v in checkpoint['model_state_dict'].items()}
        torch.save(checkpoint, recent)
    before = recent.read_bytes()
    with pytest.raises(SystemExit) as stopped:
        train_script.main(['--resume', str(run)])
    assert message in str(stopped.value) and str(recent) in str(stopped.value), stopped.value
    assert recent.read_bytes() == before


@pytest.mark.parametrize('spike, at_call, where, kept', [
    (float('inf'), 14, 'step 14 (epoch 2, batch 4)', 'Nothing was saved after epoch 1'),
    (float('nan'), 3, 'step 3 (epoch 1, batch 3)', 'No epoch had completed'),
])
def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(demo_root, tmp_path, monkeypatch,
                                                                   spike, at_call, where, kept):
    real_loss, calls = FMRLRec.loss, []

    def spiking_loss(self, *args, **kwargs):
        loss, per_size = real_loss(self, *args, **kwargs)
        calls.append(1)
        return (loss * spike if len(calls) == at_call else loss), per_size
    monkeypatch.setattr(FMRLRec, 'loss', spiking_loss)
    run = tmp_path / 'run'
    with pytest.raises(SystemExit) as stopped:
        train(demo_root, run, '--num_epochs', '3')
    message = str(stopped.value)
    assert f'the training loss is {spike} at {where}' in message and kept in message, message
    assert len(calls) <= at_call + 25  # stopped at the next check, not at the end of training
    models = run / 'models'
    if at_call > 10:
        assert torch.load(models / RECENT_CHECKPOINT, weights_only=False)['epoch'] == 1
        assert torch.load(models / BEST_CHECKPOINT, weights_only=False)['epoch'] == 1
        assert len((run / 'logs' / 'logs.csv').read_text().splitlines()) == 2
    else:
        assert not models.exists()
    assert yaml.safe_load((run / 'args.yaml').read_text())['num_epochs'] == 3
