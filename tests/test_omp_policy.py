"""utils/omp_policy.py: every entry point sets how OpenMP threads wait before torch is imported (libgomp
reads it when it loads), and a waiting variable already in the environment wins."""
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from utils.omp_policy import WAIT_VARIABLES, set_wait_policy

ENTRY_POINTS = ('train', 'eval', 'export', 'recommend', 'reproduce')
PROBE = """
import builtins, os, sys
real_import = builtins.__import__
def spy(name, *args, **kwargs):
    if name == 'torch' and 'torch' not in sys.modules:
        print('at torch:', ';'.join(f'{{v}}={{os.environ.get(v)}}' for v in {variables!r}), flush=True)
    return real_import(name, *args, **kwargs)
builtins.__import__ = spy
import {module}
"""


def test_passive_on_a_shared_machine_unless_the_environment_says(monkeypatch):
    environ = {}
    assert set_wait_policy(environ, shared=True).startswith('OMP_WAIT_POLICY=PASSIVE')
    assert environ == {'OMP_WAIT_POLICY': 'PASSIVE'}
    environ = {}
    assert 'idle' in set_wait_policy(environ, shared=False) and environ == {}
    for variable, value in (('OMP_WAIT_POLICY', 'ACTIVE'), ('GOMP_SPINCOUNT', '5'), ('KMP_BLOCKTIME', '0')):
        environ = {variable: value}
        assert set_wait_policy(environ, shared=True).endswith('(from the environment)')
        assert environ == {variable: value}


def test_the_probe_reads_the_runnable_tasks(monkeypatch):
    from utils import omp_policy
    real = omp_policy.running_processes()
    assert real is None or real >= 1  # this process runs
    counts = iter([1, 3, 1, 1, 2])
    monkeypatch.setattr(omp_policy, 'running_processes', lambda: next(counts))
    assert not omp_policy.machine_is_shared()  # median 1: only this process
    counts = iter([2, 3, 1, 2, 2])
    assert omp_policy.machine_is_shared()


@pytest.mark.parametrize('module', ENTRY_POINTS)
def test_each_entry_point_sets_it_before_torch_loads(module):
    """A busy neighbour makes the machine shared for the probe, so the entry point must go passive
    before torch is imported."""
    busy = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}
        done = subprocess.run([sys.executable, '-c', PROBE.format(variables=WAIT_VARIABLES, module=module)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    finally:
        busy.kill()
        busy.wait()
    expected = {'OMP_WAIT_POLICY': 'PASSIVE'}
    first = next(line for line in done.stdout.splitlines() if line.startswith('at torch:'))
    seen = dict(item.split('=', 1) for item in first[len('at torch: '):].split(';'))
    assert {k: v for k, v in seen.items() if v != 'None'} == expected, done.stderr[-500:]
