"""scripts/gpu_check.sh in its CPU smoke mode, twice into the same $OUT: the script only runs for
real on a GPU machine, so this keeps every part of it (data, both precisions, the kill-and-resume,
the complex64 check, the summary) from rotting between GPU sessions."""
import json
import os
import subprocess

from tests.conftest import ROOT

SMOKE = {'GPU_CHECK_DEVICE': 'cpu', 'GPU_CHECK_USERS': '300', 'GPU_CHECK_ITEMS': '200',
         'GPU_CHECK_SIZES': '8,16,32', 'GPU_CHECK_FEATURE_DIM': '32', 'GPU_CHECK_EPOCHS': '1',
         'GPU_CHECK_MEMORY_DATASETS': ''}


def test_the_gpu_check_runs_to_the_end_twice_in_its_cpu_smoke_mode(tmp_path):
    env = {**os.environ, **SMOKE, 'OUT': str(tmp_path), 'OMP_NUM_THREADS': '1'}
    env.pop('FMRLREC_FAULT', None)
    for attempt in (1, 2):  # the second finds the first one's run folders in $OUT
        done = subprocess.run(['bash', 'scripts/gpu_check.sh'], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f'attempt {attempt}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}'
        summary = json.loads((tmp_path / 'summary.json').read_text())
        assert sorted(summary) == ['run_bf16', 'run_none']
        assert all(set(run['test_mrl_metrics']) == {'8', '16', '32'} for run in summary.values())
        assert 'resumed ' in done.stdout and "scan dtypes ['(torch.complex64, torch.complex64)']" in done.stdout
