"""--threads on train.py and eval.py: the cores this process may use by default, OMP_NUM_THREADS when
the environment sets it, an explicit count otherwise; recorded in environment.yaml; torch's own
setting restored after an in-process command."""
import os

import pytest
import torch
import yaml

import eval as eval_script
import train as train_script
from utils.runtime import cpu_threads


def test_the_default_is_the_affinity_mask_unless_the_environment_says(monkeypatch):
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.delenv('LOCAL_WORLD_SIZE', raising=False)
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    assert cpu_threads() == 6 and cpu_threads(2) == 2
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '2')  # two torchrun processes share the machine
    assert cpu_threads() == 3
    monkeypatch.setenv('OMP_NUM_THREADS', '1')  # a job runner's one thread per job wins over the mask
    assert cpu_threads() == 1 and cpu_threads(4) == 4


def test_train_and_eval_use_and_record_their_threads(tmp_path, demo_root, monkeypatch):
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    before = torch.get_num_threads()
    run = tmp_path / 'run'
    seen = {}
    real_fit = train_script.Trainer.fit

    def fit(trainer):
        seen['train'] = torch.get_num_threads()
        return real_fit(trainer)
    monkeypatch.setattr(train_script.Trainer, 'fit', fit)
    train_script.main(['--dataset_code', 'demo', '--data_root', str(demo_root), '--export_root', str(run),
                       '--mrl_hidden_sizes', '4,8', '--num_epochs', '1', '--no-use_tensorboard', '--threads', '1'])
    assert seen['train'] == 1 and torch.get_num_threads() == before
    record = yaml.safe_load((run / 'environment.yaml').read_text())[-1]
    assert record['threads'] == 1 and 'omp_wait_policy' in record and record['cores_allowed'] >= 1
    real_evaluate = eval_script.evaluate_runs
    monkeypatch.setattr(eval_script, 'evaluate_runs', lambda options: seen.setdefault('eval', torch.get_num_threads()))
    eval_script.main(['--export_root', str(run), '--force', '--threads', '1'])
    assert seen['eval'] == 1 and torch.get_num_threads() == before
    monkeypatch.setattr(eval_script, 'evaluate_runs', real_evaluate)
    with pytest.raises(SystemExit):
        eval_script.main(['--export_root', str(run), '--threads', '-1'])
