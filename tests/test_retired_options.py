"""Retired options (--min_rating, --min_uc, --min_sc, --split, train.py's --eval_mode): accepted with
the one value the code computes with, refused with any other, never saved; and a run folder written
while they were saved (its args.yaml and checkpoint hold them) still resumes, evaluates and exports."""
import pytest
import yaml

import eval as eval_script
import export as export_script
from config import parse_args
from fake_run import copy_demo, make_run
from runs.run_config import config_dict, config_differences, resume_arguments, saved_run_args
from utils.retired_options import RETIRED_OPTIONS

OLD_KEYS = {'min_rating': 0, 'min_uc': 5, 'min_sc': 5, 'split': 'leave_one_out', 'eval_mode': None}


def test_the_old_values_are_accepted_and_not_saved():
    args = parse_args(['--min_rating', '0', '--min_uc', '5', '--min_sc', '5', '--split', 'leave_one_out'])
    assert not set(RETIRED_OPTIONS) & set(config_dict(args))
    assert not set(RETIRED_OPTIONS) & set(config_dict(parse_args([])))


@pytest.mark.parametrize('argv, said', [
    (['--min_uc', '3'], 'datasets.prepare --min_uc'),
    (['--min_sc', '10'], 'datasets.prepare --min_sc'),
    (['--min_rating', '4'], 'filtered already'),
    (['--split', 'random'], 'leave-one-out'),
    (['--eval_mode', 'plot'], 'python eval.py --eval_mode'),
])
def test_another_value_is_refused_with_the_reason(argv, said, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert said in capsys.readouterr().err


def old_run(tmp_path, demo_root):
    """A run folder whose args.yaml holds the retired options, as runs before their retirement do."""
    data_root = copy_demo(demo_root, tmp_path / 'data')
    run = tmp_path / 'run'
    make_run(run, data_root)
    path = run / 'args.yaml'
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **OLD_KEYS}))
    return run


def test_an_old_configuration_has_no_differences_and_resumes(tmp_path, demo_root):
    run = old_run(tmp_path, demo_root)
    saved = yaml.safe_load((run / 'args.yaml').read_text())
    args = resume_arguments(['--resume', str(run)])
    assert config_differences(saved, config_dict(args)) == []  # as a resumed checkpoint's 'config' is checked
    assert not set(RETIRED_OPTIONS) & set(config_dict(args))
    assert not set(RETIRED_OPTIONS) & set(vars(saved_run_args(run, {})))


def test_an_old_run_evaluates_and_exports(tmp_path, demo_root):
    run = old_run(tmp_path, demo_root)
    by_size = eval_script.main(['--export_root', str(run)])
    assert set(by_size) == {'4', '8', '16', '32'}
    written = export_script.main(['--export_root', str(run), '--size', '8', '--out', str(tmp_path / 'm.pt')])
    assert written == [tmp_path / 'm.pt'] and written[0].exists()
