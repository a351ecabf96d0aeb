"""One writer per run folder: a second train.py on a folder that a live train.py writes stops at once,
naming that process, and changes nothing there; a holder killed with SIGKILL never blocks the resume
(the OS releases its flock). docs/resume.md, "One run folder, one writer"."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

import train as train_script
from config import parse_args
from model.fp32_matmul import DISABLE_ENV
from runs.run_config import prepare_run_folder
from runs.run_folder import ARGS_FILE
from runs.run_lock import LOCK_FILE, RunFolderBusyError, RunFolderLock
from tests.conftest import ROOT

OPTIONS = ['--dataset_code', 'demo', '--num_epochs', '2', '--mrl_hidden_sizes', '8,16', '--train_batch_size', '128',
           '--val_batch_size', '256', '--test_batch_size', '256', '--no-use_tensorboard']


def environment():
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', DISABLE_ENV: '1'}
    env.pop('FMRLREC_FAULT', None)
    return env


def train(argv):
    return subprocess.run([sys.executable, 'train.py', *map(str, argv)], cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=300)


def wait_for(condition, process, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f'the holder ended (status {process.returncode}) before {what}: {process.stderr.read()[-2000:]}')
        if time.monotonic() > deadline:
            pytest.fail(f'timed out waiting for {what}')
        time.sleep(0.05)


def holds_lock(run, pid):
    try:
        return json.loads((run / LOCK_FILE).read_text())['pid'] == pid
    except (OSError, ValueError, KeyError):
        return False


def busy_message(run, pid):
    return (f'error: {run} is in use: another train.py (pid {pid} on host {socket.gethostname()}) is writing it, '
            f'and a run folder has one writer. Wait for that run to end, or stop it and continue it with '
            f'`python train.py --resume {run}`; to train another run, choose another --export_root.')


@pytest.fixture
def lock_holder(tmp_path):
    """A process other than train.py that holds RUN's lock until killed: (run folder, process)."""
    run = tmp_path / 'run'
    code = ('import sys, time; from runs.run_lock import RunFolderLock; '
            'lock = RunFolderLock(sys.argv[1]); lock.acquire(); print("locked", flush=True); time.sleep(600)')
    process = subprocess.Popen([sys.executable, '-c', code, str(run)], cwd=ROOT, env=environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == 'locked', process.stderr.read()
    yield run, process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_a_second_train_py_on_a_live_run_stops_at_once_and_a_killed_run_resumes(demo_root, tmp_path, capsys):
    run = tmp_path / 'run'
    options = OPTIONS + ['--data_root', demo_root]
    holder = subprocess.Popen([sys.executable, 'train.py', *map(str, options), '--resume', 'auto', '--export_root',
                               str(run)], cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: holds_lock(run, holder.pid) and (run / ARGS_FILE).exists(), holder, 'the holder wrote args.yaml')
        os.kill(holder.pid, signal.SIGSTOP)  # alive and holding the lock while the others try
        before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}

        # The requeued job's command on a run that is still training: today it would train alongside.
        second = train(options + ['--resume', 'auto', '--export_root', run])
        assert second.returncode == 1, second.stderr[-2000:]
        assert second.stderr.strip().splitlines()[-1] == busy_message(run, holder.pid)

        # In-process, without --resume and with other options, and --resume RUN: the same line, at once
        # (before the data is read, which would print the dataset's size).
        capsys.readouterr()
        for argv in (options + ['--export_root', run, '--lr', '0.01'], ['--resume', run]):
            with pytest.raises(SystemExit) as stopped:
                train_script.main([str(a) for a in argv])
            assert str(stopped.value) == busy_message(run, holder.pid)
        assert 'users' not in capsys.readouterr().out
        assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before
    finally:
        holder.kill()  # SIGKILL, also of a stopped process: the OS releases its lock
        holder.wait()

    resumed = train(options + ['--resume', 'auto', '--export_root', run])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run / 'test_mrl_metrics.json').exists()
    assert json.loads((run / LOCK_FILE).read_text())['pid'] != holder.pid  # the resumed run locked it


def test_the_lock_is_taken_before_args_yaml_is_read_or_written(lock_holder, demo_root):
    """Two runs started together on a new folder: the one that writes args.yaml holds the lock, so the
    other cannot mix its files in, although the folder had no lock file when it checked the data."""
    run, process = lock_holder
    args = parse_args(['--dataset_code', 'demo', '--data_root', str(demo_root), '--export_root', str(run)])
    with pytest.raises(RunFolderBusyError, match=f'another train.py \\(pid {process.pid} on host '):
        prepare_run_folder(args, lock=RunFolderLock(run))
    assert not (run / ARGS_FILE).exists()
    prepare_run_folder(args, write=False, lock=RunFolderLock(run))  # other ranks under torchrun: no lock, no write
    assert not (run / ARGS_FILE).exists()


def test_a_sigkilled_holder_never_blocks_and_a_finished_one_releases(lock_holder):
    run, process = lock_holder
    with pytest.raises(RunFolderBusyError):
        RunFolderLock(run).acquire()
    process.send_signal(signal.SIGKILL)
    process.wait()
    lock = RunFolderLock(run)
    assert lock.acquire() and lock.held  # the stale file is no obstacle: only a live lock counts
    assert json.loads((run / LOCK_FILE).read_text())['pid'] == os.getpid()
    with pytest.raises(RunFolderBusyError, match=f'pid {os.getpid()} '):
        RunFolderLock(run).acquire()  # another open file, even in this process, is another writer
    lock.release()
    with RunFolderLock(run) as again:
        assert again.acquire()


def test_trying_the_lock_early_writes_nothing(tmp_path):
    """Before the data is checked, a folder without a lock file is left alone (nothing is created)."""
    run = tmp_path / 'run'
    assert RunFolderLock(run).acquire(create=False) is False and not run.exists()
    run.mkdir()
    assert RunFolderLock(run).acquire(create=False) is False and list(run.iterdir()) == []
    assert RunFolderLock(run, enabled=False).acquire() and not (run / LOCK_FILE).exists()  # ranks > 0


def test_under_torchrun_rank_0_names_the_holder_and_no_rank_waits(lock_holder, demo_root):
    """Only rank 0 takes the lock; when it cannot, the other ranks stop with it instead of waiting."""
    run, process = lock_holder
    env = environment()
    launched = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                               'train.py', *OPTIONS, '--device', 'cpu', '--data_root', str(demo_root),
                               '--resume', 'auto', '--export_root', str(run)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert launched.returncode != 0
    assert busy_message(run, process.pid) in launched.stderr, launched.stderr[-3000:]
    assert 'train.py", line' not in launched.stderr  # torchrun's own report only: no traceback through the project
    assert not re.search(r'\b(trainer|evaluation|runs)/\w+\.py', launched.stderr)
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # nothing written by any rank
