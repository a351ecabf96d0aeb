"""The configuration: real booleans, validated sizes, no sys.argv at import."""
import subprocess
import sys

import pytest

from config import ConfigError, parse_args, parse_sizes
from tests.conftest import ROOT


@pytest.mark.parametrize('argv, expected', [
    ([], True), (['--use_img_encoder'], True), (['--use_img_encoder', 'False'], False),
    (['--use_img_encoder', 'false'], False), (['--use_img_encoder=0'], False),
    (['--no-use_img_encoder'], False), (['--use_img_encoder', 'True'], True),
])
def test_booleans_are_real(argv, expected):
    assert parse_args(argv).use_img_encoder is expected


def test_bad_boolean_is_an_error(capsys):
    with pytest.raises(SystemExit):
        parse_args(['--use_wandb', 'maybe'])
    assert 'expected a boolean' in capsys.readouterr().err


def test_released_defaults():
    args = parse_args(['--dataset_code', 'beauty'])
    assert args.mrl_hidden_sizes == [8, 16, 32, 64, 128, 256, 512, 1024]
    assert (args.lr, args.weight_decay, args.adam_epsilon, args.max_grad_norm) == (1e-4, 0.01, 1e-9, 5.0)
    assert (args.train_batch_size, args.val_batch_size, args.lru_max_len, args.lru_num_blocks) == (32, 64, 50, 1)
    assert (args.num_epochs, args.early_stopping_patience, args.best_metric) == (500, 10, 'NDCG@10')
    assert args.metric_ks == [5, 10, 20, 50] and args.seed == 42 and args.mrl_loss == 'sum'
    assert args.language_encoder == 'BAAI/bge-large-en-v1.5' and args.mask_history is False
    assert args.export_root.startswith('experiments/') and '/lru/beauty_dp0.1_rmin0.0_' in args.export_root


@pytest.mark.parametrize('text, message', [
    ('8,16,16', 'strictly increasing'), ('16,8', 'strictly increasing'), ('0,8', 'positive'),
    ('-8,16', 'positive'), ('8,x', 'not an integer'), ('', 'empty'), ('8.5,16', 'not an integer'),
])
def test_size_lists_are_validated(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_sizes(text)


def test_bad_sizes_exit_with_the_reason(capsys):
    with pytest.raises(SystemExit):
        parse_args(['--mrl_hidden_sizes', '8,32,16'])
    assert 'strictly increasing' in capsys.readouterr().err


def test_best_metric_must_be_computed(capsys):
    with pytest.raises(SystemExit):
        parse_args(['--best_metric', 'NDCG@7'])
    assert 'NDCG@7' in capsys.readouterr().err


def test_importing_modules_reads_no_argv():
    code = 'import config, train, eval, trainer.trainer, model, datasets.p5; print("ok")'
    out = subprocess.run([sys.executable, '-c', code, '--bogus-flag'], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr
