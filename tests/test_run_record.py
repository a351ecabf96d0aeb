"""The run folder tells its own story: environment.yaml per start, train.log, TensorBoard (loss, learning
rate, every size's validation metrics, test metrics as hparams) and one W&B run kept across --resume."""
import json
import sys
import types

import pytest
import torch
import yaml

import train as train_script
from runs.loggers import WANDB_ID_FILE

SMALL = ['--mrl_hidden_sizes', '8,16', '--train_batch_size', '128', '--val_batch_size', '256',
         '--test_batch_size', '256', '--num_epochs', '2']


class FakeWandbRun:
    """What train.py hands to W&B, recorded (the real client needs an account or its offline service)."""

    def __init__(self, **options):
        self.options, self.logged, self.summary, self.finished = options, [], {}, False

    def log(self, values, step=None):
        self.logged.append((step, dict(values)))

    def finish(self):
        self.finished = True


@pytest.fixture(scope='module')
def recorded_run(demo_root, tmp_path_factory):
    """A 2-epoch run with TensorBoard and (fake) W&B, then resumed once (a finished run: tested again)."""
    run = tmp_path_factory.mktemp('record') / 'run'
    wandb = types.ModuleType('wandb')
    wandb.runs = []
    wandb.init = lambda **options: wandb.runs.append(FakeWandbRun(**options)) or wandb.runs[-1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, 'wandb', wandb)
        train_script.main(['--dataset_code', 'demo', '--data_root', str(demo_root), '--export_root', str(run),
                           '--use_wandb', '--threads', '1', *SMALL])
        train_script.main(['--resume', str(run), '--threads', '1'])
    return run, wandb.runs


def test_environment_is_recorded_at_every_start(recorded_run):
    run, _ = recorded_run
    first, resumed = yaml.safe_load((run / 'environment.yaml').read_text())
    assert first['resumed_after_epoch'] is None and resumed['resumed_after_epoch'] == 2
    assert first['torch'] == str(torch.__version__) and first['cuda'] == torch.version.cuda
    assert first['cpu_capability'] == torch.backends.cpu.get_cpu_capability() and first['threads'] == 1
    assert first['device'] == 'cpu' and first['processes'] == 1 and first['python'] == sys.version.split()[0]
    assert {'host', 'commit', 'dirty', 'cpu', 'command', 'started'} <= set(first)


def test_train_log_holds_what_was_printed(recorded_run):
    run, _ = recorded_run
    log = (run / 'train.log').read_text()
    assert log.count('==== ') == 2 and '\r' not in log  # two starts; progress bars left out
    assert 'demo: 1200 users, 320 items' in log and 'epoch 2: loss ' in log
    assert f'resumed {run} after epoch 2 (step 20)' in log
    assert log.count('Test metrics of the best checkpoint (epoch 2), every size:') == 2


def test_tensorboard_has_every_size_the_learning_rate_and_the_test_hparams(recorded_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run, _ = recorded_run
    training = EventAccumulator(str(run / 'tb'))
    training.Reload()
    tags = set(training.Tags()['scalars'])
    assert {'train/loss', 'train/lr', 'val/NDCG@10', 'val_NDCG@10/size8', 'val_Recall@20/size16'} <= tags
    assert [event.step for event in training.Scalars('val_NDCG@10/size8')] == [10, 20]
    test = EventAccumulator(str(run / 'tb' / 'test'))
    test.Reload()
    expected = json.loads((run / 'test_mrl_metrics.json').read_text())
    assert test.Scalars('test_NDCG@10/size8')[-1].value == pytest.approx(expected['8']['NDCG@10'])
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    start = HParamsPluginData.FromString(test.PluginTagToContent('hparams')['_hparams_/session_start_info'])
    hparams = start.session_start_info.hparams
    assert hparams['lr'].number_value == 1e-4 and hparams['mrl_hidden_sizes'].string_value == '[8, 16]'


def test_one_wandb_run_across_resume_with_the_test_metrics(recorded_run):
    run, wandb_runs = recorded_run
    run_id = (run / 'logs' / WANDB_ID_FILE).read_text().strip()
    assert [r.options['id'] for r in wandb_runs] == [run_id, run_id] and all(r.finished for r in wandb_runs)
    assert all(r.options['resume'] == 'allow' for r in wandb_runs)
    expected = json.loads((run / 'test_mrl_metrics.json').read_text())
    for wandb_run in wandb_runs:
        assert wandb_run.summary['test_NDCG@10/size16'] == expected['16']['NDCG@10']
    assert {'train/lr', 'val_NDCG@10/size8'} <= set(wandb_runs[0].logged[0][1])
