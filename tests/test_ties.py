"""Ties cannot flatter (docs/content_features.md, Ties): by default a target scored exactly like other
items gets the mean of each metric over a uniformly random order of them; 'first' and 'last' bound it."""
import functools
import itertools
import json
import math
from types import SimpleNamespace

import pytest
import torch

import eval as eval_script
from evaluation.evaluate import evaluate, evaluate_ranks, metrics_from_ranks
from evaluation.final_evaluation import print_table, results_from_ranks
from evaluation.metrics import (BEST, DEFAULT_TIES, TIE_RULES, TIED_SHARE, WORST, exact_ranks, metric_sums,
                                metric_values, ndcg_at, target_ranks)
from evaluation.popularity import popularity_table
from evaluation.sharded import sharded_evaluate
from fake_run import randomise
from model import FMRLRec
from tests.test_metrics import FixedScores
from trainer.distributed import SINGLE_PROCESS
from utils.report import metrics_table

NAMES = ('Recall', 'NDCG', 'MRR')


def value_at(name, rank, k):
    """One target's metric at an exact rank, by the formulas of docs/method.md."""
    if rank > k:
        return 0.0
    return {'Recall': 1.0, 'NDCG': ndcg_at(rank, k), 'MRR': 1.0 / rank}[name]


def constant_inputs(users, items):
    """FixedScores inputs (the last token names the user), targets and empty histories."""
    generator = torch.Generator().manual_seed(7)
    inputs = torch.stack([torch.zeros(users, dtype=torch.long), torch.arange(1, users + 1)], dim=1)
    targets = torch.randint(1, items + 1, (users,), generator=generator)
    return (torch.arange(users), inputs, targets, torch.zeros(users, 1, dtype=torch.long))


@functools.lru_cache(maxsize=None)
def random_order_mean(name, higher, tied_others, k):
    """The oracle of the default rule: the metric averaged over every order of the target (member 0)
    and the items tied with it, enumerated (keep groups small: (tied_others + 1)! orders)."""
    orders = list(itertools.permutations(range(tied_others + 1)))
    return sum(value_at(name, higher + 1 + order.index(0), k) for order in orders) / len(orders)


def test_a_small_tie_by_hand():
    # user 0: item 1 above the target (item 3), items 2 and 4 tie with it -> ranks 2, 3 or 4;
    # user 1: its target (item 1) alone on top -> rank 1 under every rule
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.5, 0.5, 0.1],
                           [0.0, 0.8, 0.5, 0.5, 0.5, 0.1]])
    ranks = target_ranks(scores, torch.tensor([3, 1]))
    assert ranks.tolist() == [[2, 4], [1, 1]]
    expected = metrics_from_ranks(ranks.unsqueeze(0), [8], [1, 3])[8]
    assert expected['Recall@1'] == 0.5 and expected['MRR@1'] == 0.5  # user 0 never reaches rank 1
    assert expected['Recall@3'] == pytest.approx((1 + 2 / 3) / 2)  # user 0: ranks 2 and 3 of 2, 3, 4
    assert expected['NDCG@3'] == pytest.approx((1 + (1 / math.log2(3) + 1 / math.log2(4)) / 3) / 2)
    assert expected['MRR@3'] == pytest.approx((1 + (1 / 2 + 1 / 3) / 3) / 2)
    first = metrics_from_ranks(ranks.unsqueeze(0), [8], [3], ties='first')[8]
    last = metrics_from_ranks(ranks.unsqueeze(0), [8], [3], ties='last')[8]
    assert (first['Recall@3'], first['MRR@3']) == (1.0, pytest.approx((1 + 1 / 2) / 2))  # user 0 at rank 2
    assert (last['Recall@3'], last['MRR@3']) == (0.5, 0.5)  # user 0 at rank 4


def test_the_default_rule_is_the_mean_over_every_order_of_the_tied_items():
    generator = torch.Generator().manual_seed(11)
    # Scores on a grid of 6 values over 14 items: most targets tie, in small groups.
    scores = torch.randint(0, 6, (60, 15), generator=generator).float()
    scores[:, 0] = float('-inf')  # the padding item
    ranks = target_ranks(scores, torch.randint(1, 15, (60,), generator=generator))
    assert (ranks[:, WORST] > ranks[:, BEST]).float().mean() > 0.6
    assert int((ranks[:, WORST] - ranks[:, BEST]).max()) <= 6  # at most 7! orders to enumerate
    for k in (1, 3, 10):
        values = metric_values(ranks, k)
        for user, (best, worst) in enumerate(ranks.tolist()):
            for name in NAMES:
                oracle = random_order_mean(name, best - 1, worst - best, k)
                assert values[name][user].item() == pytest.approx(oracle, rel=1e-12, abs=0), (user, name, k)


@pytest.mark.parametrize('items', [8, 64, 1024])  # powers of 2: k / N and its means are exact in binary
def test_a_constant_model_scores_what_a_random_ranking_does(items):
    users = 30
    model = FixedScores(torch.full((1, users, items + 1), 0.25))
    examples = constant_inputs(users, items)
    ks = [1, 5, 10]
    metrics = evaluate(model, examples, [8], ks, progress=False)[8]
    for k in ks:
        shown = min(k, items)
        assert metrics[f'Recall@{k}'] == shown / items  # exactly: k of the N equally likely places
        assert metrics[f'NDCG@{k}'] == pytest.approx(sum(1 / math.log2(r + 1) for r in range(1, shown + 1)) / items)
        assert metrics[f'MRR@{k}'] == pytest.approx(sum(1 / r for r in range(1, shown + 1)) / items)
    assert evaluate(model, examples, [8], [10], progress=False, ties='first')[8]['Recall@10'] == 1.0
    assert evaluate(model, examples, [8], [10], progress=False, ties='last')[8]['Recall@10'] == (
        1.0 if items <= 10 else 0.0)


def test_a_model_whose_feature_rows_are_all_alike_scores_what_a_random_ranking_does():
    items, sizes = 50, [4, 8]
    # Every item's features are zero: the projection gives each item its bias, bit for bit. (Equal
    # nonzero rows need not: a matrix product may round two equal rows differently.)
    features = torch.zeros(items + 1, 6)
    model = randomise(FMRLRec(items, sizes, features, None, dropout=0.0, attn_dropout=0.0))
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randint(1, items + 1, (20, 6), generator=generator)
    examples = (torch.arange(20), inputs, torch.randint(1, items + 1, (20,), generator=generator),
                inputs.clone())
    ranks = evaluate_ranks(model, examples[1], examples[2], examples[3], len(sizes), progress=False)
    assert ranks.tolist() == [[[1, items]] * 20] * len(sizes)  # every item ties with every target
    for size, metrics in evaluate(model, examples, sizes, [10], progress=False).items():
        assert metrics['Recall@10'] == 10 / items, size
    # masking the history leaves fewer items to tie with: the target's chances rise accordingly
    masked = evaluate_ranks(model, examples[1], examples[2], examples[3], len(sizes), mask_history=True,
                            progress=False)
    remaining = [items - len(set(row) - {int(target)}) for row, target in zip(inputs.tolist(), examples[2])]
    assert masked[..., WORST].tolist() == [remaining] * len(sizes) and bool((masked[..., BEST] == 1).all())


def test_first_bounds_the_default_from_above_and_last_from_below():
    generator = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 4, (200, 31), generator=generator).float()
    ranks = target_ranks(scores, torch.randint(1, 31, (200,), generator=generator),
                         torch.zeros(200, 1, dtype=torch.long))
    tied = ranks[:, WORST] > ranks[:, BEST]
    for k in (1, 5, 10, 20):
        by_rule = {ties: metric_values(ranks, k, ties) for ties in TIE_RULES}
        for name in NAMES:
            first, expected, last = (by_rule[ties][name] for ties in ('first', 'expected', 'last'))
            assert bool((first >= expected).all()) and bool((expected >= last).all()), (name, k)
            # strict where the tie changes the value: NDCG and MRR fall with every rank up to k,
            # Recall only across k
            strict = tied & (ranks[:, BEST] <= k) & ((ranks[:, WORST] > k) if name == 'Recall' else True)
            assert bool(strict.any()) and bool((first[strict] > expected[strict]).all()), (name, k)
            assert bool((expected[strict] > last[strict]).all()), (name, k)


def test_without_ties_the_three_rules_give_the_rank_formulas_bit_for_bit():
    generator = torch.Generator().manual_seed(9)
    scores = torch.randn(300, 81, generator=generator)  # continuous: no two items alike
    ranks = target_ranks(scores, torch.randint(1, 81, (300,), generator=generator),
                         torch.zeros(300, 1, dtype=torch.long))
    assert torch.equal(ranks[:, BEST], ranks[:, WORST])
    ks = [1, 5, 10, 20, 50]
    sums = {ties: metric_sums(ranks, ks, ties) for ties in TIE_RULES}
    assert sums['expected'] == sums['first'] == sums['last']
    for k in ks:
        for name in NAMES:
            by_hand = sum(value_at(name, rank, k) for rank in ranks[:, BEST].tolist())
            assert sums[DEFAULT_TIES][f'{name}@{k}'] == pytest.approx(by_hand, rel=1e-13)


def test_masked_history_items_neither_rank_above_the_target_nor_tie_with_it():
    # items 1..6; the target (item 3) ties with items 2, 4 and 5; item 1 is above it.
    scores = torch.tensor([[[0.0, 0.9, 0.5, 0.5, 0.5, 0.5, 0.1]]])
    model = FixedScores(scores)
    inputs, targets, histories = torch.tensor([[0, 1]]), torch.tensor([3]), torch.tensor([[4, 1, 3]])
    examples = (torch.tensor([1]), inputs, targets, histories)
    plain = evaluate_ranks(model, inputs, targets, histories, 1, progress=False)
    masked = evaluate_ranks(model, inputs, targets, histories, 1, mask_history=True, progress=False)
    assert plain.tolist() == [[[2, 5]]]
    assert masked.tolist() == [[[1, 3]]]  # items 1 and 4 masked; the target, a repeat, stays
    assert evaluate(model, examples, [4], [1], progress=False)[4]['Recall@1'] == 0.0
    masked_recall = evaluate(model, examples, [4], [1], mask_history=True, progress=False)[4]['Recall@1']
    assert masked_recall == pytest.approx(1 / 3)


def test_masked_ties_against_every_order_of_a_masked_copy():
    generator = torch.Generator().manual_seed(4)
    users, items = 25, 12
    scores = torch.randint(0, 5, (1, users, items + 1), generator=generator).float()
    targets = torch.randint(1, items + 1, (users,), generator=generator)
    histories = torch.randint(0, items + 1, (users, 5), generator=generator)
    inputs = torch.stack([torch.zeros(users, dtype=torch.long), torch.arange(1, users + 1)], dim=1)
    ranks = evaluate_ranks(FixedScores(scores), inputs, targets, histories, 1, batch_size=4, mask_history=True,
                           progress=False)[0]
    values = metric_values(ranks, 3)
    for user in range(users):
        target = int(targets[user])
        kept = [i for i in range(1, items + 1) if i == target or i not in histories[user].tolist()]
        level = scores[0, user, target]
        higher = sum(1 for i in kept if scores[0, user, i] > level)
        tied_others = sum(1 for i in kept if scores[0, user, i] == level) - 1
        for name in NAMES:
            assert values[name][user].item() == pytest.approx(random_order_mean(name, higher, tied_others, 3))


def test_validation_reads_ties_by_the_default_rule():
    users, items = 12, 40
    model = FixedScores(torch.zeros(2, users, items + 1))  # two sizes, every score alike
    metrics = sharded_evaluate(model, constant_inputs(users, items), [4, 8], [10], batch_size=5, device='cpu',
                               group=SINGLE_PROCESS)
    assert metrics[4]['Recall@10'] == metrics[8]['Recall@10'] == 10 / items


def test_the_metrics_files_state_the_share_of_tied_targets(tmp_path, capsys):
    # size 8: user 0 ties (ranks 2..4), users 1-3 do not; size 16: nobody ties
    ranks = torch.tensor([[[2, 4], [1, 1], [5, 5], [3, 3]],
                          [[1, 1], [2, 2], [7, 7], [1, 1]]])
    args = SimpleNamespace(mrl_hidden_sizes=[8, 16], metric_ks=[1, 10])
    examples = (torch.arange(4), None, torch.tensor([1, 2, 3, 4]), None)
    training = (None, torch.tensor([[1, 1, 2, 0]]))
    by_size = results_from_ranks(args, ranks, examples, training, tmp_path)
    assert json.loads((tmp_path / 'test_mrl_metrics.json').read_text()) == by_size
    assert by_size['8'][TIED_SHARE] == 0.25 and by_size['16'][TIED_SHARE] == 0.0
    assert by_size['8']['Recall@10'] == 1.0 and by_size['8']['Recall@1'] == 0.25
    assert json.loads((tmp_path / 'test_metrics.json').read_text())[TIED_SHARE] == 0.0  # the largest size
    report = json.loads((tmp_path / 'test_mrl_metrics_by_popularity.json').read_text())
    assert report['ties'] == DEFAULT_TIES
    assert report['by_size']['8']['1-4'][TIED_SHARE] == 0.5 and report['by_size']['8']['0'][TIED_SHARE] == 0.0
    # the per-size tables show metrics only; the printed test table says which sizes had ties
    assert TIED_SHARE not in metrics_table(by_size) and TIED_SHARE not in popularity_table(report, k=5)
    print_table(by_size, 'test')
    assert capsys.readouterr().out.splitlines()[-1].endswith('(docs/content_features.md, Ties): size 8 25.0%')


def test_eval_takes_the_default_rule_and_writes_each_bound_to_its_own_files():
    assert eval_script.parse_eval_args(['--export_root', 'run']).ties == DEFAULT_TIES == 'expected'
    for bound in ('first', 'last'):
        assert eval_script.parse_eval_args(['--export_root', 'run', '--ties', bound]).ties == bound
        with pytest.raises(SystemExit):
            eval_script.parse_eval_args(['--export_root', 'run', '--ties', bound, '--eval_mode', 'summary'])


def test_an_unknown_rule_or_an_unranked_target_is_refused():
    ranks = exact_ranks(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match='^ties must be one of expected, first, last, not .random.$'):
        metric_sums(ranks, [1], ties='random')
    with pytest.raises(ValueError, match='UNRANKED'):
        metric_sums(exact_ranks(torch.tensor([1, 0])), [1])
