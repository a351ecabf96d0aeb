"""utils/thread_governor.py: fewer threads while other processes compete, all again once they leave;
only for automatic thread counts in one process; the changes land in environment.yaml."""
import os

import pytest
import torch
import yaml

from utils import thread_governor
from utils.thread_governor import WINDOW, ThreadGovernor, governed, other_runnable, running_threads_of


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def run_governor(samples, threads=2, cores=2):
    """Feed `samples` (other runnable tasks), one per second; the thread count after each tick."""
    clock, said = Clock(), []
    queue = list(samples)
    governor = ThreadGovernor(threads, cores, sample=lambda: queue.pop(0), clock=clock, say=said.append)
    counts = []
    for _ in samples:
        clock.now += thread_governor.CHECK_SECONDS
        governor.tick()
        counts.append(governor.current)
    return governor, counts, said


def test_it_takes_the_cores_left_over_and_all_of_them_again(restore_threads):
    busy, idle = [1] * WINDOW, [0] * WINDOW
    governor, counts, said = run_governor(busy + idle + [2] * WINDOW)
    # nothing changes before a whole window of evidence (and each change starts a new window): one
    # core is left beside one task, both cores when it leaves, and still one beside two tasks
    assert counts == [2] * (WINDOW - 1) + [1] * WINDOW + [2] * WINDOW + [1]
    assert torch.get_num_threads() == 1
    assert [change[1:] for change in governor.changes] == [(2, 1, 1), (1, 2, 0), (2, 1, 2)]
    assert said[0].startswith('threads: 2 -> 1 (1 other runnable task(s) on 2 core(s)')


def test_a_short_spike_changes_nothing_and_it_never_goes_below_one_or_above_its_count(restore_threads):
    _, counts, _ = run_governor([0, 3, 0, 0, 3, 0, 0])  # median of each window: 0
    assert set(counts) == {2}
    _, counts, _ = run_governor([7] * WINDOW, threads=4, cores=8)
    assert counts[-1] == 1
    _, counts, _ = run_governor([0] * WINDOW, threads=2, cores=8)
    assert counts[-1] == 2  # six free cores: still the automatic count, no more


def test_it_samples_at_most_once_a_second(restore_threads):
    clock, calls = Clock(), []
    governor = ThreadGovernor(2, 2, sample=lambda: calls.append(1) or 0, clock=clock, say=lambda text: None)
    for _ in range(100):
        clock.now += 0.25  # exact in binary
        governor.tick()
    assert len(calls) == int(100 * 0.25 / thread_governor.CHECK_SECONDS)


def test_only_an_automatic_count_of_one_process_is_governed(monkeypatch, restore_threads):
    monkeypatch.setenv(thread_governor.DISABLE_ENV, '1')
    monkeypatch.setattr(thread_governor, 'usable_cores', lambda: 2)
    with governed(2, automatic=True) as governor:
        assert isinstance(governor, ThreadGovernor)
    for kwargs in ({'automatic': False}, {'automatic': True, 'distributed': True}):
        with governed(2, **kwargs) as governor:
            assert governor is None
    with governed(1, automatic=True) as governor:
        assert governor is None  # one thread: nothing to take away
    monkeypatch.setenv(thread_governor.DISABLE_ENV, '0')
    with governed(2, automatic=True) as governor:
        assert governor is None


def test_the_machine_is_read_from_proc():
    assert running_threads_of() >= 1  # this thread runs
    assert other_runnable(read_running=lambda: 5, read_own=lambda: 2) == 3
    assert other_runnable(read_running=lambda: 1, read_own=lambda: 2) == 0
    assert other_runnable(read_running=lambda: None) is None
    if os.path.exists('/proc/stat'):
        assert other_runnable() >= 0


def test_train_records_the_changes_in_environment_yaml(tmp_path, demo_root, monkeypatch, restore_threads):
    import train as train_script
    monkeypatch.setenv(thread_governor.DISABLE_ENV, '1')
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.setattr(thread_governor, 'usable_cores', lambda: 2)
    monkeypatch.setattr(thread_governor, 'CHECK_SECONDS', 0.0)
    monkeypatch.setattr(thread_governor, 'other_runnable', lambda: 3)  # a crowded machine
    monkeypatch.setattr('utils.runtime.cpu_threads', lambda requested=0: 2)
    run = tmp_path / 'run'
    train_script.main(['--dataset_code', 'demo', '--data_root', str(demo_root), '--export_root', str(run),
                       '--mrl_hidden_sizes', '8,16', '--num_epochs', '1', '--no-use_tensorboard'])
    entry = yaml.safe_load((run / 'environment.yaml').read_text())[-1]
    assert entry['thread_changes'][0] == {'seconds': entry['thread_changes'][0]['seconds'], 'from': 2, 'to': 1,
                                          'other_runnable': 3}
