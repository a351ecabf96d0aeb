"""The new-item boost (evaluation/new_item_boost.py): boosted ranks equal the ranks of explicitly
boosted scores at every size, the boost chosen on validation is the largest the tolerance allows,
and eval.py --new_item_boost writes what it says, or refuses in one line."""
import json

import pytest
import torch

from evaluation.evaluate import evaluate_ranks, excluded_items
from evaluation.metrics import target_ranks
from evaluation.new_item_boost import BOOST_GRID, choose_boosts
from runs.run_config import saved_run_args
from runs.run_inputs import load_data
from tests.fake_run import SIZES, copy_demo, make_run

COLD = ['--use_img_encoder', 'False', '--item_id_embedding', '--cold_start', '--cold_start_share', '0.1']


@pytest.fixture(scope='module')
def cold_run(tmp_path_factory, demo_root):
    root = tmp_path_factory.mktemp('boost')
    data_root = copy_demo(demo_root, root / 'data')
    run = root / 'run'
    model = make_run(run, data_root, extra_args=COLD)
    return run, model


def test_boosted_ranks_equal_the_ranks_of_explicitly_boosted_scores(cold_run):
    run, model = cold_run
    args = saved_run_args(run, {})
    _, splits, _ = load_data(args, trained_run=True)
    _, inputs, targets, histories = splits['test']
    items = torch.as_tensor(splits['held_out'])
    values = torch.tensor([[0.0] * len(SIZES), [0.5] * len(SIZES), [2.0, -1.0, 0.25, 3.0]])
    for mask_history in (False, True):
        boosted = evaluate_ranks(model, inputs, targets, histories, len(SIZES), 37, mask_history=mask_history,
                                 progress=False, boost=(items, values))
        plain = evaluate_ranks(model, inputs, targets, histories, len(SIZES), 37, mask_history=mask_history,
                               progress=False)
        assert boosted.shape == (3, len(SIZES), len(targets), 2)
        assert torch.equal(boosted[0], plain)  # a zero boost changes nothing, at every size
        scores = model.scores(inputs)  # (M, U, N + 1), each size computed on its own
        excluded = excluded_items(histories if mask_history else None, targets)
        for row in range(1, 3):
            for size in range(len(SIZES)):
                edited = scores[size].clone()
                edited[:, items] += values[row, size]
                expected = target_ranks(edited, targets, excluded)
                assert torch.equal(boosted[row, size], expected), (row, size, mask_history)
        # the held-out targets move up with a positive boost, the others down
        held = torch.isin(targets, items)
        assert (boosted[1][:, held] <= plain[:, held]).all() and (boosted[1][:, ~held] >= plain[:, ~held]).all()
        assert (boosted[1][:, held] < plain[:, held]).any()


def test_choose_boosts_takes_the_largest_boost_within_the_tolerance():
    grid = (0.0, 0.5, 1.0, 1.5)
    # size 8: 0.100, 0.101, 0.0991, 0.0989 -> with 1%: 1.0 (0.0991 >= 0.099), not 1.5 (0.0989 < 0.099)
    # size 16: falls at once -> 0; size 32: rises -> the largest
    curve = [{8: {'NDCG@10': a}, 16: {'NDCG@10': b}, 32: {'NDCG@10': c}}
             for a, b, c in zip((0.100, 0.101, 0.0991, 0.0989), (0.2, 0.15, 0.1, 0.05), (0.1, 0.2, 0.3, 0.4))]
    assert choose_boosts(curve, [8, 16, 32], 0.01, grid) == {8: 1.0, 16: 0.0, 32: 1.5}
    assert choose_boosts(curve, [8], 0.0, grid) == {8: 0.5}  # no tolerance: never below the unboosted
    with pytest.raises(ValueError, match='must start at 0'):
        choose_boosts(curve, [8], 0.01, (0.5, 1.0, 1.5, 2.0))
    with pytest.raises(ValueError, match='in \\[0, 1\\)'):
        choose_boosts(curve, [8], 1.0, grid)


def test_eval_chooses_the_boosts_on_validation_and_tests_them(cold_run, capsys):
    import eval as eval_script
    run, _ = cold_run
    eval_script.main(['--export_root', str(run), '--new_item_boost', 'auto', '--new_item_tolerance', '0.05'])
    report = json.loads((run / 'test_mrl_metrics_new_item_boost.json').read_text())
    assert report['tolerance'] == 0.05 and report['grid'] == list(BOOST_GRID)
    cold = json.loads((run / 'test_mrl_metrics_cold_start.json').read_text())
    assert report['test']['held_out_users'] == cold['users'] > 0
    for size in map(str, SIZES):
        curve = report['validation'][size]
        chosen = report['boosts'][size]
        floor = 0.95 * curve[0]['all']
        assert chosen == max(point['boost'] for point in curve if point['all'] >= floor)
        # the unboosted test is the run's own test, for all users and for the held-out users
        unboosted = report['test']['by_size'][size]['unboosted']
        assert unboosted['held_out'] == cold['by_size'][size]
        assert unboosted['all']['NDCG@10'] == pytest.approx(
            json.loads((run / 'test_mrl_metrics.json').read_text())[size]['NDCG@10'])
    assert 'New-item boost (chosen on validation)' in capsys.readouterr().out
    # the same boosts given by hand give the same test numbers
    given = ','.join(str(report['boosts'][str(size)]) for size in SIZES)
    eval_script.main(['--export_root', str(run), '--new_item_boost', given])
    again = json.loads((run / 'test_mrl_metrics_new_item_boost.json').read_text())
    assert again['test'] == report['test'] and 'validation' not in again


def test_eval_refuses_a_boost_it_cannot_apply(tmp_path, demo_root, cold_run):
    import eval as eval_script
    warm = tmp_path / 'warm'
    make_run(warm, copy_demo(demo_root, tmp_path / 'data'), extra_args=['--use_img_encoder', 'False'])
    with pytest.raises(SystemExit, match='error: --new_item_boost boosts the items a run never trained on'):
        eval_script.main(['--export_root', str(warm), '--new_item_boost', 'auto'])
    assert not (warm / 'test_mrl_metrics_cold_start.json').exists()  # refused before testing anything
    assert json.loads((warm / 'test_mrl_metrics.json').read_text())['4']['NDCG@10'] == 0.05  # make_run's, untouched
    with pytest.raises(SystemExit, match='error: --new_item_boost: 2 values for the 4 sizes'):
        eval_script.main(['--export_root', str(cold_run[0]), '--new_item_boost', '1,2'])
    for bad in (['--new_item_boost', 'more'], ['--new_item_boost', 'nan'], ['--new_item_boost', 'auto', '--ties', 'last'],
                ['--new_item_boost', 'auto', '--new_item_tolerance', '1.5']):
        with pytest.raises(SystemExit):
            eval_script.parse_eval_args(['--export_root', str(warm), *bad])
