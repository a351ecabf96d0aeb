"""Never lose a run: a run SIGKILLed mid-epoch and mid-save, then resumed, ends exactly like an
uninterrupted run with the same seed (metrics, best checkpoint, optimizer, log)."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from model.fp32_matmul import DISABLE_ENV
from runs.run_folder import BEST_CHECKPOINT, RECENT_CHECKPOINT
from tests.conftest import ROOT
from utils.io import atomic_torch_save, write_json

EPOCHS = 3
STEPS_PER_EPOCH = 10  # 1200 demo users / batch 128
# Dropout stays on (0.1), so the resumed run must also replay the torch RNG exactly.
OPTIONS = ['--dataset_code', 'demo', '--num_epochs', str(EPOCHS), '--mrl_hidden_sizes', '8,16',
           '--train_batch_size', '128', '--val_batch_size', '256', '--test_batch_size', '256',
           '--lr', '1e-3', '--no-use_tensorboard']


def train(argv, fault=None):
    """train.py in a fresh process, single-threaded so that every run computes bit for bit alike.
    The uninterrupted run and the interrupted one are independent runs, which probe their CPU
    routes each (docs/resume.md, Determinism): on a busy machine the oneDNN probe chose differently
    once, and the two runs rounded differently. The default library for both fixes that."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', DISABLE_ENV: '1'}
    env.pop('FMRLREC_FAULT', None)
    if fault:
        env['FMRLREC_FAULT'] = fault
    return subprocess.run([sys.executable, 'train.py', *map(str, argv)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def load(path):
    return torch.load(path, map_location='cpu', weights_only=False)


def log_rows(run):
    with open(run / 'logs' / 'logs.csv', newline='') as handle:
        return [{k: v for k, v in row.items() if 'seconds' not in k} for row in csv.DictReader(handle)]  # timings vary


@pytest.fixture(scope='module')
def runs(demo_root, tmp_path_factory):
    base = tmp_path_factory.mktemp('resume')
    reference, interrupted = base / 'reference', base / 'interrupted'
    options = OPTIONS + ['--data_root', demo_root]
    done = train(options + ['--export_root', reference])
    assert done.returncode == 0, done.stderr[-2000:]
    seen = {}
    # 1. Killed in the middle of epoch 2 (a pre-empted job); --resume auto starts a run that is not there yet.
    killed = train(options + ['--resume', 'auto', '--export_root', interrupted],
                   fault=f'kill_at_step={STEPS_PER_EPOCH + 5}')
    assert killed.returncode == -9, killed.stderr[-2000:]
    seen['after_mid_epoch_kill'] = load(interrupted / 'models' / RECENT_CHECKPOINT)['epoch']
    seen['rows_after_mid_epoch_kill'] = len(log_rows(interrupted))
    # 2. Resumed with the run's own options, and killed while writing its 2nd checkpoint.
    killed = train(['--resume', interrupted], fault='kill_in_save=2')
    assert killed.returncode == -9, killed.stderr[-2000:]
    seen['temporaries'] = sorted(p.name for p in (interrupted / 'models').glob('.*.tmp'))
    seen['after_mid_save_kill'] = load(interrupted / 'models' / RECENT_CHECKPOINT)['epoch']
    # 3. Resumed again, to the end.
    finished = train(['--resume', interrupted])
    assert finished.returncode == 0, finished.stderr[-2000:]
    seen['final_stdout'] = finished.stdout
    return reference, interrupted, seen


def test_a_mid_epoch_kill_keeps_the_last_completed_epoch(runs):
    _, _, seen = runs
    assert seen['after_mid_epoch_kill'] == 1 and seen['rows_after_mid_epoch_kill'] == 1


def test_a_mid_save_kill_leaves_the_previous_checkpoint_intact(runs):
    _, interrupted, seen = runs
    assert len(seen['temporaries']) == 1 and seen['temporaries'][0].startswith('.')
    assert seen['after_mid_save_kill'] in (1, 2)  # the file loads: the old one, not a torn one
    assert 'left by an interrupted write' in seen['final_stdout']  # and the next run said so
    assert not list((interrupted / 'models').glob('.*.tmp'))


def test_the_resumed_run_ends_exactly_like_the_uninterrupted_one(runs):
    reference, interrupted, _ = runs
    assert (interrupted / 'test_mrl_metrics.json').read_text() == (reference / 'test_mrl_metrics.json').read_text()
    assert log_rows(interrupted) == log_rows(reference) and len(log_rows(reference)) == EPOCHS
    best, best_ref = load(interrupted / 'models' / BEST_CHECKPOINT), load(reference / 'models' / BEST_CHECKPOINT)
    assert best['epoch'] == best_ref['epoch']
    for name, tensor in best_ref['model_state_dict'].items():
        assert torch.equal(best['model_state_dict'][name], tensor), name
    recent, recent_ref = load(interrupted / 'models' / RECENT_CHECKPOINT), load(reference / 'models' / RECENT_CHECKPOINT)
    assert recent['global_step'] == recent_ref['global_step'] == EPOCHS * STEPS_PER_EPOCH
    for index, state in recent_ref['optimizer_state_dict']['state'].items():
        assert torch.equal(recent['optimizer_state_dict']['state'][index]['exp_avg_sq'], state['exp_avg_sq'])
    assert torch.equal(recent['rng_states']['torch'], recent_ref['rng_states']['torch'])
    # the product routes, which each resumed process takes again (model/cpu_routes.py)
    assert recent['cpu_routes'] == recent_ref['cpu_routes'] and recent_ref['cpu_routes']['onednn_fp32'] is False


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / 'model.pth'
    atomic_torch_save({'version': 1}, path)

    def fail(tmp):
        raise OSError('disk full')
    with pytest.raises(OSError, match='disk full'):
        atomic_torch_save({'version': 2}, path, before_rename=fail)
    assert load(path) == {'version': 1} and os.listdir(tmp_path) == ['model.pth']
    write_json(tmp_path / 'metrics.json', {'a': 1})
    assert json.loads((tmp_path / 'metrics.json').read_text()) == {'a': 1}
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / 'metrics.json').stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would make it
