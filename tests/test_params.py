"""Parameter accounting: the stored count equals what the modules hold, a dense model is the
one-chunk FMRLRec, and the paper convention reproduces Figure 4's 10.5M against 14M."""
import pytest
import torch

from fake_run import copy_demo, make_run
from model import FMRLRec
from model.slicing import nested_and_independent, parameter_count, slice_model
from scripts import params as params_script

SIZES = [4, 8, 16]


def numel(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('features,num_blocks,bias', [(True, 2, True), (True, 1, False), (False, 2, True)])
def test_stored_count_is_what_the_modules_hold(features, num_blocks, bias):
    num_items, feature_dim = 20, 7
    table = torch.randn(num_items + 1, feature_dim) if features else None
    options = dict(num_blocks=num_blocks, bias=bias, feature_dim=feature_dim if features else None,
                   num_items=None if features else num_items)
    full = FMRLRec(num_items, SIZES, text_features=table, num_blocks=num_blocks, bias=bias)
    for k, size in enumerate(SIZES, start=1):
        assert numel(slice_model(full, size)) == parameter_count(SIZES[:k], **options)
        dense = FMRLRec(num_items, [size], text_features=table, num_blocks=num_blocks, bias=bias)
        assert numel(dense) == parameter_count([size], **options)


def test_nested_run_against_independent_models():
    rows = nested_and_independent(SIZES, num_blocks=1, feature_dim=7)
    assert [r['size'] for r in rows] == SIZES
    assert rows[0]['nested'] == rows[0]['independent'] == rows[0]['independent_cumulative']
    assert rows[-1]['independent_cumulative'] == sum(parameter_count([s], 1, feature_dim=7) for s in SIZES)
    assert rows[-1]['nested'] < rows[-1]['independent'] < rows[-1]['independent_cumulative']
    assert rows[-1]['saving'] == pytest.approx(1 - rows[-1]['nested'] / rows[-1]['independent_cumulative'])


def test_paper_convention_reproduces_figure_4():
    paper_sizes = [8, 16, 32, 64, 128, 256, 512, 1024]
    last = nested_and_independent(paper_sizes, num_blocks=2, feature_dim=2048, convention='paper')[-1]
    assert last['nested'] == 2 * 5 * 1024 ** 2 == 10_485_760          # "about 10.5M"
    assert last['independent_cumulative'] == 13_980_800                # "about 14M"
    assert last['saving'] == pytest.approx(0.25, abs=1e-4)


def test_cli_on_a_run_checks_the_checkpoint_and_draws_the_plot(demo_root, tmp_path, capsys):
    run = tmp_path / 'run'
    full = make_run(run, copy_demo(demo_root, tmp_path / 'data'))
    tables = params_script.main(['--export_root', str(run)])
    out = capsys.readouterr().out
    assert f'stored count of the full model {numel(full):,} matches the checkpoint' in out
    assert tables['stored'][-1]['nested'] == numel(full)
    assert [r['size'] for r in tables['paper']] == [4, 8, 16, 32]
    png = run / 'plots' / 'parameters.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_cli_for_a_configuration(tmp_path, capsys):
    png = tmp_path / 'p.png'
    params_script.main(['--sizes', '8,16,32', '--num_blocks', '1', '--feature_dim', '0', '--num_items', '50',
                        '--convention', 'stored', '--plot', str(png)])
    out = capsys.readouterr().out
    expected = parameter_count([8, 16, 32], 1, num_items=50)
    assert f'holds {expected:,}' in out and 'paper count' not in out and png.exists()
    with pytest.raises(SystemExit):
        params_script.main(['--feature_dim', '0'])  # ID-only needs --num_items
    with pytest.raises(SystemExit, match='increasing'):
        params_script.main(['--sizes', '16,8'])
