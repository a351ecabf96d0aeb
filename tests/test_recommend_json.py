"""recommend.py --json: standard output holds JSON lines only, whatever the loading said on the way
(preprocessing notices, changed inputs accepted, notes about the users all go to standard error)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets.demo import DEMO_ENCODER
from datasets.features import feature_cache_path, save_feature_table
from fake_run import copy_demo, make_run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def whitened_run(demo_root, tmp_path_factory):
    """(run folder, data root) of a fake demo run on whitened features."""
    root = tmp_path_factory.mktemp('recommend_json')
    data_root = copy_demo(demo_root, root / 'data')
    make_run(root / 'run', data_root, extra_args=['--feature_preprocessing', 'whiten'])
    return root / 'run', data_root


def recommend(run, *extra):
    environment = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}
    done = subprocess.run([sys.executable, 'recommend.py', '--export_root', str(run), '--size', '8', '--k', '5',
                           '--json', *extra], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def json_lines(stdout):
    lines = stdout.splitlines()
    assert lines, 'no output'
    return [json.loads(line) for line in lines]  # any line that is not JSON fails here


def test_stdout_is_json_lines_on_preprocessed_features(whitened_run, tmp_path):
    run, _ = whitened_run
    users = tmp_path / 'users.txt'
    users.write_text('alice\tDEMO000005,DEMO000007\nbob\t12 85 3\n')
    done = recommend(run, '--history_file', str(users))
    assert [user['user'] for user in json_lines(done.stdout)] == ['alice', 'bob']
    assert 'text features: --feature_preprocessing whiten' in done.stderr


def test_stdout_stays_json_when_changed_inputs_are_accepted_and_users_need_notes(whitened_run, tmp_path):
    run, data_root = whitened_run
    data_copy = tmp_path / 'data'
    copy_demo(data_root, data_copy)
    path = feature_cache_path(data_copy / 'demo', 'image', DEMO_ENCODER)
    save_feature_table(path, np.load(path)[::-1], DEMO_ENCODER)  # rows reversed: other inputs than the run's
    users = tmp_path / 'users.txt'
    users.write_text('NOPE\n' + ','.join(str(i) for i in range(1, 70)) + '\n')  # unknown only; longer than 50
    done = recommend(run, '--history_file', str(users), '--data_root', str(data_copy), '--skip_unknown',
                     '--accept_changed_inputs')
    records = json_lines(done.stdout)
    assert [record['user'] for record in records] == ['line 1', 'line 2'] and records[0]['items'] == []
    assert 'warning: --accept_changed_inputs' in done.stderr and 'note: ' in done.stderr
