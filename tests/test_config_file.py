"""--config FILE.yaml (any option; the command line wins), the paper's presets as files, and --help."""
import pytest
import yaml

import reproduce
from config import parse_args
from runs.run_config import config_dict, config_differences, resume_arguments
from utils.io import write_yaml

# The paper's best configuration per dataset (docs/method.md), as reproduce.py hard-coded it before the presets.
PAPER = {'beauty': (0.0, 0.6), 'clothing': (0.1, 0.5), 'sports': (0.1, 0.5), 'toys': (0.0, 0.6)}


def write(path, text):
    path.write_text(text)
    return path


def test_a_file_sets_options_and_the_command_line_wins(tmp_path):
    config = write(tmp_path / 'c.yaml', 'dataset_code: beauty\nlr: 1.0e-3\nuse_img_encoder: false\n'
                                        'mrl_hidden_sizes: [8, 16, 32]\nmetric_ks: [5, 10]\nbest_metric: NDCG@5\n'
                                        'export_root: null\n')
    args = parse_args(['--config', str(config)])
    assert (args.dataset_code, args.lr, args.use_img_encoder) == ('beauty', 1e-3, False)
    assert args.mrl_hidden_sizes == [8, 16, 32] and args.metric_ks == [5, 10] and args.best_metric == 'NDCG@5'
    assert args.export_root.startswith('experiments/')  # null keeps the default
    wins = parse_args(['--lr', '0.01', f'--config={config}', '--use_img_encoder', '--metric_ks', '5'])
    assert wins.lr == 0.01 and wins.use_img_encoder is True and wins.metric_ks == [5]
    assert not hasattr(args, 'config')  # args.yaml records the values, so old runs resume unchanged


@pytest.mark.parametrize('text, message', [
    ('lrr: 0.1\n', "'lrr' is not an option of this command (did you mean lr?)"),
    ('lr: [0.1\n', 'not valid YAML'),
    ('- lr\n', 'expected option: value lines (a YAML mapping), got list'),
    ('lr: fast\n', "argument --lr: invalid float value: 'fast'"),
])
def test_a_bad_file_stops_like_a_bad_option(tmp_path, capsys, text, message):
    config = write(tmp_path / 'bad.yaml', text)
    with pytest.raises(SystemExit) as stop:
        parse_args(['--config', str(config)])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_a_missing_file_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(['--config', str(tmp_path / 'none.yaml')])
    assert f'--config {tmp_path / "none.yaml"}: cannot be read (No such file or directory)' in capsys.readouterr().err


@pytest.mark.parametrize('dataset', sorted(PAPER))
def test_the_presets_are_the_papers_configuration_and_reproduce_uses_them(dataset):
    r_min, dropout = PAPER[dataset]
    argv = reproduce.preset_argv(dataset, 'full', 'now')
    assert argv[0] == '--config' and argv[1].endswith(f'presets/{dataset}.yaml')
    args = parse_args(argv)
    assert args.dataset_code == dataset and args.mrl_hidden_sizes == [8, 16, 32, 64, 128, 256, 512, 1024]
    assert (args.lru_num_blocks, args.lru_r_min, args.lru_r_max) == (2, r_min, round(r_min + 0.1, 3))
    assert (args.lru_dropout, args.lru_attn_dropout, args.weight_decay, args.lr) == (dropout, dropout, 0.01, 1e-4)
    assert args.use_language_encoder and args.use_img_encoder


def test_resume_with_a_config_file_must_agree(tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    write_yaml(run / 'args.yaml', config_dict(parse_args(['--export_root', str(run), '--lr', '1e-3'])))
    same = write(tmp_path / 'same.yaml', 'lr: 1.0e-3\n')
    other = write(tmp_path / 'other.yaml', 'lr: 1.0e-2\n')
    saved = yaml.safe_load((run / 'args.yaml').read_text())
    resumed = resume_arguments(['--resume', str(run), '--config', str(same)])
    assert config_differences(saved, config_dict(resumed)) == []
    changed = resume_arguments(['--resume', str(run), '--config', str(other)])
    assert config_differences(saved, config_dict(changed)) == ['lr: 0.001 -> 0.01']


def test_help_shows_defaults_and_examples(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(['--help'])
    text = capsys.readouterr().out
    assert stop.value.code == 0
    assert '--lr LR' in text and '(default: 0.0001)' in text and '(default: 8,16,32,64,128,256,512,1024)' in text
    assert 'examples:' in text and 'python train.py --config presets/beauty.yaml --lr 1e-3' in text
