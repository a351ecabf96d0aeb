"""scripts/gpu_check.sh in its CPU smoke mode: the script only runs for real on a GPU machine, so this
keeps every part of it (data, both precisions, the kill-and-resume, the complex64 check, the summary)
from rotting between GPU sessions. It runs twice into the same $OUT, the second time with one
section made to fail (a stand-in `python` first on PATH): every other section must still run and
report, summary.json must say which failed, and the exit status must be 1."""
import json
import os
import subprocess
import sys

from tests.conftest import ROOT

SMOKE = {'GPU_CHECK_DEVICE': 'cpu', 'GPU_CHECK_USERS': '300', 'GPU_CHECK_ITEMS': '200',
         'GPU_CHECK_SIZES': '8,16,32', 'GPU_CHECK_FEATURE_DIM': '32', 'GPU_CHECK_EPOCHS': '1',
         'GPU_CHECK_MEMORY_DATASETS': ''}
CPU_SKIPS = {'train_compile', 'torchrun', 'memory'}  # CUDA only, 2 GPUs only, the memory table turned off
# A stand-in python: the fp32 training run (its --export_root ends in run_none) fails, the rest is python.
FAILING_FP32_RUN = '''#!/usr/bin/env bash
case " $* " in *"/run_none "*) echo "stand-in: the fp32 run fails" >&2; exit 3 ;; esac
exec {python} "$@"
'''
BROKEN = '''#!/usr/bin/env bash
echo "stand-in: no python here" >&2
exit 1
'''


def run_check(out, python_stand_in=None):
    env = {**os.environ, **SMOKE, 'OUT': str(out), 'OMP_NUM_THREADS': '1'}
    env.pop('FMRLREC_FAULT', None)
    if python_stand_in is not None:
        folder = out.parent / 'stand_in_bin'
        folder.mkdir(exist_ok=True)
        (folder / 'python').write_text(python_stand_in.format(python=sys.executable))
        (folder / 'python').chmod(0o755)
        env['PATH'] = f'{folder}{os.pathsep}{env["PATH"]}'
    done = subprocess.run(['bash', 'scripts/gpu_check.sh'], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    return done, json.loads((out / 'summary.json').read_text())


def statuses(summary):
    return {name: section['status'] for name, section in summary['sections'].items()}


def test_the_gpu_check_runs_to_the_end_twice_and_reports_a_failing_section_without_losing_the_others(tmp_path):
    out = tmp_path / 'out'
    done, summary = run_check(out)
    report = f'{done.stdout[-3000:]}\n{done.stderr[-3000:]}'
    assert done.returncode == 0, report
    assert summary['failed'] == []
    assert statuses(summary) == {**{name: 'pass' for name in ('data', 'train_none', 'train_bf16', 'resume',
                                                               'complex64', 'runs')},
                                 **{name: 'skipped' for name in CPU_SKIPS}}, report
    assert sorted(summary['runs']) == ['run_bf16', 'run_none']
    assert all(set(run['test_mrl_metrics']) == {'8', '16', '32'} for run in summary['runs'].values())
    assert 'resumed ' in done.stdout and "scan dtypes ['(torch.complex64, torch.complex64)']" in done.stdout
    assert 'resumed ' in (out / summary['sections']['resume']['log']).read_text()

    # again into the same $OUT (the first check's run folders are there), with the fp32 run failing
    done, summary = run_check(out, FAILING_FP32_RUN)
    report = f'{done.stdout[-3000:]}\n{done.stderr[-3000:]}'
    assert done.returncode == 1, report
    assert summary['failed'] == ['train_none']
    assert summary['sections']['train_none'] == {'status': 'fail', 'exit_status': 3, 'log': 'logs/train_none.log'}
    assert 'stand-in: the fp32 run fails' in (out / 'logs' / 'train_none.log').read_text()
    assert '-- train_none: FAIL, exit status 3' in done.stdout
    assert statuses(summary) == {'train_none': 'fail',
                                 **{name: 'pass' for name in ('data', 'train_bf16', 'resume', 'complex64', 'runs')},
                                 **{name: 'skipped' for name in CPU_SKIPS}}, report
    assert sorted(summary['runs']) == ['run_bf16']  # the first check's run_none is gone, not reported again
    assert 'resumed ' in done.stdout and "scan dtypes ['(torch.complex64, torch.complex64)']" in done.stdout


def test_without_a_working_python_every_section_still_reports_and_summary_json_is_written(tmp_path):
    done, summary = run_check(tmp_path / 'out', BROKEN)
    assert done.returncode == 1
    assert summary['failed'] == ['data', 'complex64', 'runs']
    assert summary['runs'] is None
    assert summary['sections']['resume'] == {'status': 'skipped', 'reason': 'the data section failed'}
    assert set(statuses(summary)) == {'data', 'train_none', 'train_bf16', 'train_compile', 'resume', 'torchrun',
                                      'complex64', 'memory', 'runs'}
    for name in summary['failed']:
        assert 'stand-in: no python here' in (tmp_path / 'out' / summary['sections'][name]['log']).read_text()
