"""Metrics against hand-computed values, and the evaluator's protocol details."""
import math

import pytest
import torch

from evaluation.evaluate import evaluate, evaluate_ranks, metrics_from_ranks
from evaluation.metrics import UNRANKED, exact_ranks, metric_sums, ndcg_at, target_ranks


def test_ranks_count_strictly_higher_scores():
    scores = torch.tensor([[0.0, 0.9, 0.1, 0.5, 0.7],
                           [0.0, 0.2, 0.2, 0.9, 0.1]])
    targets = torch.tensor([3, 2])
    # user 0: 0.9 and 0.7 beat 0.5 -> best rank 3; user 1: only 0.9 beats 0.2 -> best rank 2, and
    # item 1 ties with it -> worst rank 3
    assert target_ranks(scores, targets).tolist() == [[3, 3], [2, 3]]


def test_the_worst_rank_puts_the_target_behind_every_item_scored_like_it():
    scores = torch.tensor([[0.0, 0.9, 0.1, 0.5, 0.7],
                           [0.0, 0.2, 0.2, 0.9, 0.2],
                           [0.0, float('nan'), 0.2, 0.9, 0.2]])
    targets = torch.tensor([3, 2, 2])
    # user 0 has no tie (3 either way); user 1's target ties with items 1 and 4 (and the padding
    # item 0 scores below): best 2, worst 4; the NaN row is unranked in both columns
    assert target_ranks(scores, targets).tolist() == [[3, 3], [2, 4], [UNRANKED, UNRANKED]]


def test_neighbouring_floats_do_not_tie_and_extreme_scores_count_right():
    target = torch.tensor(0.3)
    up, down = torch.nextafter(target, torch.tensor(1.0)), torch.nextafter(target, torch.tensor(0.0))
    big = torch.finfo(torch.float32).max
    scores = torch.tensor([[float('-inf'), up, down, 0.3, 0.3, big, -big, 1e-40, -1e-40]])
    # above item 3: item 1 (one ulp higher) and item 5; tied: item 4; below: the others
    assert target_ranks(scores, torch.tensor([3])).tolist() == [[3, 4]]
    tiny = torch.tensor([[0.0, 1e-40, 2e-40, 1e-40, -1e-40]])  # denormals, not flushed by default
    assert target_ranks(tiny, torch.tensor([1])).tolist() == [[2, 3]]


def test_metric_values_by_hand():
    ranks = exact_ranks(torch.tensor([1, 3, 7, 60]))
    sums = metric_sums(ranks, [5, 10, 50])
    assert sums['Recall@5'] == 2 and sums['Recall@10'] == 3 and sums['Recall@50'] == 3
    assert sums['NDCG@5'] == pytest.approx(1 + 1 / math.log2(4))
    assert sums['NDCG@10'] == pytest.approx(1 + 0.5 + 1 / 3)  # 1/log2(2), 1/log2(4), 1/log2(8)
    assert sums['MRR@5'] == pytest.approx(1 + 1 / 3)
    assert sums['MRR@10'] == pytest.approx(1 + 1 / 3 + 1 / 7)
    assert ndcg_at(3, 5) == pytest.approx(0.5) and ndcg_at(6, 5) == 0.0


def test_a_target_at_rank_exactly_k_counts_and_one_at_k_plus_1_does_not():
    ranks = exact_ranks(torch.tensor([5, 6, 10, 11]))
    sums = metric_sums(ranks, [5, 10])
    assert sums['Recall@5'] == 1 and sums['Recall@10'] == 3
    assert sums['NDCG@5'] == pytest.approx(1 / math.log2(6))
    assert sums['NDCG@10'] == pytest.approx(1 / math.log2(6) + 1 / math.log2(7) + 1 / math.log2(11))
    assert sums['MRR@5'] == pytest.approx(1 / 5) and sums['MRR@10'] == pytest.approx(1 / 5 + 1 / 6 + 1 / 10)
    assert ndcg_at(5, 5) == pytest.approx(1 / math.log2(6)) and ndcg_at(6, 5) == 0.0


def test_ranked_from_scores_a_target_at_rank_k_is_a_hit_at_k():
    # item 1 scores higher, items 2-4 tie with the target (item 5): ranks 2 to 5
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.5, 0.5, 0.5, 0.1]])
    ranks = target_ranks(scores, torch.tensor([5]))
    assert ranks.tolist() == [[2, 5]]
    first = metric_sums(ranks, [1, 2], ties='first')  # rank 2
    assert (first['Recall@1'], first['Recall@2'], first['MRR@2']) == (0, 1, 0.5)
    expected = metric_sums(ranks, [1, 2])  # rank 2 one time in 4
    assert (expected['Recall@1'], expected['Recall@2'], expected['MRR@2']) == (0, 0.25, 0.125)


def test_metrics_are_means_over_users_per_size():
    ranks = exact_ranks(torch.tensor([[1, 2], [10, 30]]))
    result = metrics_from_ranks(ranks, [8, 16], [5, 20])
    assert result[8]['Recall@5'] == 1.0 and result[16]['Recall@5'] == 0.0
    assert result[16]['Recall@20'] == 0.5
    assert result[8]['NDCG@5'] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert list(result[8]) == ['Recall@5', 'NDCG@5', 'MRR@5', 'Recall@20', 'NDCG@20', 'MRR@20']


class FixedScores(torch.nn.Module):
    """A stand-in model whose scores are a fixed table row per user (for protocol tests)."""

    def __init__(self, scores):
        super().__init__()
        self.fixed = scores  # (M, U, N + 1)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def item_table(self):
        return None

    def first_lru_inputs(self, table):
        return None

    def running_scores(self, packed, table, lru_inputs, input_table=None):
        users = packed.tokens[packed.query] - 1  # the input token encodes the user here
        yield from self.fixed[:, users].clone()


def test_padding_item_is_never_ranked_and_history_mask_is_opt_in():
    # one size, two users, items 1..4; the padding item 0 has the highest raw score
    scores = torch.tensor([[[9.0, 1.0, 5.0, 4.0, 3.0], [9.0, 5.0, 4.0, 1.0, 3.0]]])
    model = FixedScores(scores)
    inputs = torch.tensor([[0, 1], [0, 2]])   # last token = user id + 1 -> user index
    targets = torch.tensor([3, 4])
    histories = torch.tensor([[0, 2], [1, 4]])  # user 2's history holds its own target (a repeat)
    examples = (torch.tensor([1, 2]), inputs, targets, histories)
    plain = evaluate(model, examples, [4], [1, 2], progress=False)[4]
    assert plain['Recall@1'] == 0.0 and plain['Recall@2'] == 0.5  # ranks 2 and 3: item 0 ignored
    masked = evaluate(model, examples, [4], [1, 2], mask_history=True, progress=False)[4]
    # user 1: item 2 masked -> target 3 ranks first; user 2: item 1 masked, target kept -> rank 2
    assert masked['Recall@1'] == 0.5 and masked['Recall@2'] == 1.0


def masked_copy_ranks(scores, targets, histories, mask_history):
    """The oracle: write -inf over the masked items of a copy (target kept), then rank the copy."""
    copy = scores.clone()
    for size_scores in copy:
        keep = size_scores.gather(1, targets.unsqueeze(1))
        if mask_history:
            size_scores.scatter_(1, histories, float('-inf'))
            size_scores.scatter_(1, targets.unsqueeze(1), keep)
        size_scores[:, 0] = float('-inf')
    return torch.stack([target_ranks(size_scores, targets) for size_scores in copy])


@pytest.mark.parametrize('mask_history', [False, True])
def test_ranking_with_masked_items_taken_back_equals_ranking_a_masked_copy(mask_history):
    # Scores on a coarse grid (many ties, the padding item among the highest), histories with
    # repeated items, zero padding and, for some users, their own target.
    generator = torch.Generator().manual_seed(3)
    sizes, users, items = 2, 40, 30
    scores = torch.randint(0, 6, (sizes, users, items + 1), generator=generator).float()
    targets = torch.randint(1, items + 1, (users,), generator=generator)
    histories = torch.randint(1, 8, (users, 9), generator=generator)
    histories[::3, :2] = 0
    histories[::4, -1] = targets[::4]
    inputs = torch.stack([torch.zeros(users, dtype=torch.long), torch.arange(1, users + 1)], dim=1)
    ranks = evaluate_ranks(FixedScores(scores), inputs, targets, histories, sizes, batch_size=7,
                           mask_history=mask_history, progress=False)
    assert torch.equal(ranks, masked_copy_ranks(scores, targets, histories, mask_history))  # both bounds


def test_a_nan_at_a_masked_item_is_masked_and_one_elsewhere_stops_the_ranking():
    scores = torch.tensor([[[float('nan'), 1.0, 5.0, float('nan'), 3.0]]])  # one size, one user
    model = FixedScores(scores)
    inputs, targets, histories = torch.tensor([[0, 1]]), torch.tensor([4]), torch.tensor([[3, 3]])
    masked = evaluate_ranks(model, inputs, targets, histories, 1, mask_history=True, progress=False)
    assert masked.tolist() == [[[2, 2]]]  # item 3 (NaN) masked, item 0 (NaN) is padding: only item 2 beats 3.0
    plain = evaluate_ranks(model, inputs, targets, histories, 1, progress=False)
    assert plain.tolist() == [[[UNRANKED, UNRANKED]]]


def test_a_padding_target_is_refused_in_one_line():
    with pytest.raises(ValueError, match='targets must be item ids >= 1'):
        evaluate_ranks(FixedScores(torch.zeros(1, 1, 3)), torch.tensor([[0, 1]]), torch.tensor([0]),
                       torch.zeros(1, 1, dtype=torch.long), 1, progress=False)
