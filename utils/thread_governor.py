"""Fewer threads while other processes compete for the cores, all of them again once they leave.

The waiting policy is chosen once, before OpenMP starts (utils/omp_policy.py), and cannot follow the
machine afterwards: two jobs started together on an idle machine both spin, and a job that started
alone keeps spinning when a neighbour arrives; spinning threads beside a busy process made the demo
several times slower (benchmarks/README.md, "Shared machine"). The thread count can change while
running: with one thread there is no barrier to spin at. So, about once a second, the loops that do
the work (training steps, evaluation batches) ask `tick()`, which samples the runnable tasks of the
machine that are not this process's (/proc/stat's procs_running less this process's running
threads); when the median of the last few samples says the cores are shared, the process takes the
cores left over (at least one), and its automatic thread count again when they are free.

Only automatic thread counts follow the machine (train.py and eval.py without --threads or
OMP_NUM_THREADS, one process): a count someone chose is kept. Each change is said in one line and kept
in `changes` (train.py records them in environment.yaml). A product's rounding can depend on the
thread count, so a run whose count changed may differ from one that ran alone in the last bits.
FMRLREC_ADAPTIVE_THREADS=0 turns this off.
"""
import contextlib
import os
import sys
import time
from collections import deque

import torch

from utils.omp_policy import running_processes

DISABLE_ENV = 'FMRLREC_ADAPTIVE_THREADS'
CHECK_SECONDS = 1.0  # between samples
WINDOW = 5           # samples whose median decides: a change needs about five seconds of evidence


def running_threads_of(pid='self'):
    """This process's threads in state R (running or runnable), from /proc; None where unreadable."""
    try:
        tasks = os.listdir(f'/proc/{pid}/task')
    except OSError:
        return None
    running = 0
    for task in tasks:
        try:
            with open(f'/proc/{pid}/task/{task}/stat') as handle:
                # the state follows the parenthesised name, which may itself hold spaces or parentheses
                running += handle.read().rsplit(')', 1)[1].split()[0] == 'R'
        except (OSError, IndexError):
            continue
    return running


def other_runnable(read_running=running_processes, read_own=running_threads_of):
    """Runnable tasks on the machine that are not this process's threads; None where /proc is missing."""
    total, own = read_running(), read_own()
    if total is None or own is None:
        return None
    return max(0, total - own)


class ThreadGovernor:
    """Set torch's thread count from the competition on the machine (module docstring).

    threads: the automatic count, the most it ever uses; cores: the cores this process may use;
    sample: a function returning the other runnable tasks now (tests pass their own); clock: seconds."""

    def __init__(self, threads, cores, sample=None, clock=time.monotonic, say=None):
        self.full, self.cores = int(threads), int(cores)
        self.current = self.full
        self.sample = sample if sample is not None else (lambda: other_runnable())
        self.clock = clock
        self.say = say if say is not None else (lambda text: print(text, file=sys.stderr))
        self.samples = deque(maxlen=WINDOW)
        self.next_check = clock() + CHECK_SECONDS
        self.changes = []  # (seconds since start, threads before, threads after, others)
        self.started = clock()

    def tick(self):
        """Sample when a second has passed; change the thread count when the window says so."""
        now = self.clock()
        if now < self.next_check:
            return
        self.next_check = now + CHECK_SECONDS
        others = self.sample()
        if others is None:
            return
        self.samples.append(others)
        if len(self.samples) < WINDOW:
            return
        competing = sorted(self.samples)[WINDOW // 2]
        wanted = max(1, min(self.full, self.cores - competing))
        if wanted != self.current:
            torch.set_num_threads(wanted)
            self.changes.append((round(now - self.started, 1), self.current, wanted, competing))
            self.say(f'threads: {self.current} -> {wanted} ({competing} other runnable task(s) on '
                     f'{self.cores} core(s); utils/thread_governor.py)')
            self.current = wanted
            self.samples.clear()


_active = None


@contextlib.contextmanager
def governed(threads, automatic, distributed=False):
    """Govern the thread count inside the block when it was chosen automatically, in a single process
    (under torchrun each rank must keep its count: ranks' rounding must agree). Yields the governor or None."""
    global _active
    enabled = os.environ.get(DISABLE_ENV, '1').strip().lower() not in ('0', 'false', 'no')
    cores = usable_cores()
    previous, _active = _active, (ThreadGovernor(threads, cores) if enabled and automatic and not distributed
                                  and cores > 1 and threads > 1 else None)
    try:
        yield _active
    finally:
        _active = previous


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def thread_changes():
    """The thread changes made so far in the governed block: (seconds, before, after, others)."""
    return [] if _active is None else list(_active.changes)


def tick():
    """Called once per training step or evaluation batch: cheap unless a second has passed."""
    if _active is not None:
        _active.tick()
