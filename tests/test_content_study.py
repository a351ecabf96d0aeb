"""scripts/content_study.py: the rows' train.py commands, the row lock, and the report's numbers."""
import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from config import parse_args
from scripts import content_study, study_rows

ROOT = Path(__file__).resolve().parent.parent


def options(tmp_path, **extra):
    return argparse.Namespace(out=str(tmp_path), data_root='DATA', feature_dir='FEATURES',
                              language_encoder='ENCODER', **extra)


def test_every_row_is_the_base_plus_its_change_and_parses(tmp_path):
    for name, _, _, change in content_study.ROWS:
        argv = content_study.row_argv(name, options(tmp_path))
        args = parse_args(argv)  # every row is a valid train.py command
        assert args.export_root == str(tmp_path / name) and args.resume == 'auto'
        assert argv[:len(content_study.BASE)] == content_study.BASE
        base = parse_args(content_study.row_argv('text', options(tmp_path)))
        differing = {k for k in vars(args) if getattr(args, k) != getattr(base, k)} - {'export_root'}
        # one factor at a time: a row differs from the base only in what its change names
        named = {option.lstrip('-').replace('no-', '') for option in change if option.startswith('--')}
        assert differing <= named, (name, differing - named)


def test_a_row_is_locked_while_its_training_process_holds_the_lock(tmp_path):
    first = study_rows.try_lock(tmp_path / '.row.lock')
    assert first is not None
    assert study_rows.try_lock(tmp_path / '.row.lock') is None  # a second runner skips the row
    holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3)'], pass_fds=(first.fileno(),))
    first.close()  # the child's copy keeps it
    assert study_rows.try_lock(tmp_path / '.row.lock') is None
    holder.wait()
    assert study_rows.try_lock(tmp_path / '.row.lock') is not None


def fake_row(folder, losses, val_ndcg, test_ndcg, by_bucket):
    (folder / 'logs').mkdir(parents=True)
    (folder / 'args.yaml').write_text(yaml.safe_dump({'mrl_hidden_sizes': [8, 64]}))
    with open(folder / 'logs' / 'logs.csv', 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['epoch', 'train_loss', 'seconds', 'val_Recall@10', 'val_NDCG@10'])
        for epoch, (loss, ndcg) in enumerate(zip(losses, val_ndcg), start=1):
            writer.writerow([epoch, loss, 60.0, 2 * ndcg, ndcg])
    metrics = {'8': {'NDCG@10': 0.001, 'Recall@10': 0.002}, '64': {'NDCG@10': test_ndcg, 'Recall@10': 0.05}}
    (folder / 'test_mrl_metrics.json').write_text(json.dumps(metrics))
    report = {'buckets': {'0': [0, 0], '1-4': [1, 4]}, 'users': {'0': 0, '1-4': 7},
              'by_size': {'64': {'0': {'NDCG@10': None, 'Recall@10': None},
                                 '1-4': {'NDCG@10': by_bucket, 'Recall@10': 0.5}}}}
    (folder / 'test_mrl_metrics_by_popularity.json').write_text(json.dumps(report))


def test_report_takes_the_best_epoch_the_last_loss_and_the_largest_size(tmp_path, capsys):
    fake_row(tmp_path / 'id', [40.0, 35.0, 34.5], [0.01, 0.03, 0.02], 0.0239, 0.25)
    assert content_study.main(['report', '--out', str(tmp_path)]) == 0
    result = json.loads((tmp_path / 'study.json').read_text())[0]
    assert result['row'] == 'id' and result['epochs'] == 3 and result['best_epoch'] == 2
    assert result['val_NDCG10'] == 0.03 and result['val_Recall10'] == 0.06
    assert result['final_loss'] == 34.5 and result['minutes'] == 3.0
    assert result['test_NDCG10'] == 0.0239 and result['test_Recall10'] == 0.05
    table = (tmp_path / 'study.md').read_text()
    assert '| id | control | ID-only (no features) | 0.0300 | 0.0600 | 0.0239 | 0.0500 | 34.500 | 3 (2) | 3.0 |' in table
    # empty buckets are left out of the per-bucket table, the others carry their user counts
    assert 'NDCG@10 1-4 (7 users)' in table and '| id | 0.2500 | 0.5000 |' in table and 'NDCG@10 0 ' not in table


def test_report_without_any_row_is_one_clear_line(tmp_path):
    with pytest.raises(SystemExit, match='no study row has started'):
        content_study.main(['report', '--out', str(tmp_path)])


def test_the_script_runs_from_anywhere(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'content_study.py'), 'list', '--out', str(tmp_path),
                           '--language_encoder', 'ENCODER'], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split()[:2] == ['id', 'pending']


def test_rows_may_follow_the_options_and_unknown_rows_are_named(tmp_path):
    parser = study_rows.study_parser('study', tmp_path)
    names = ['id_best', 'hybrid_best', 'text']
    options = study_rows.parse_study_options(parser, ['report', '--jobs', '2', 'id_best', 'hybrid_best', '--poll', '1'],
                                             names)
    assert options.rows == ['id_best', 'hybrid_best'] and options.jobs == 2 and options.poll == 1.0
    with pytest.raises(SystemExit):
        study_rows.parse_study_options(parser, ['report', 'no_such_row'], names)
