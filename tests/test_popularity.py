"""Test metrics by target popularity (evaluation/popularity.py): counts over the training labels, buckets,
exact per-bucket metrics, buckets that add up to the overall metrics, and the file train.py and eval.py write."""
import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch

import eval as eval_script
import train as train_script
from datasets.p5 import split_examples
from evaluation.evaluate import metrics_from_ranks
from evaluation.metrics import TIED_SHARE, exact_ranks
from evaluation.popularity import BUCKETS, bucket_indices, popularity_report, popularity_table, target_counts

# max_len 25: user 4's training part has 28 items, so its first three (item 6) are never a training label.
MAX_LEN = 25
SEQUENCES = {
    1: [9] * 21 + [4, 9],          # train 9 x21        val 4  test 9
    2: [5] * 6 + [3, 5],           # train 5 x6         val 3  test 5
    3: [2, 3, 1, 2],               # train 2 3          val 1  test 2
    4: [6] * 3 + [1] * 25 + [2, 6],  # train 6 x3 1 x25 (labels: 1 x25)  val 2  test 6
    5: [3, 4, 8, 3],               # train 3 4          val 8  test 3
    6: [1, 2, 4, 6],               # train 1 2          val 4  test 6
}
# training-label counts: 9:21 5:6 2:2 3:2 1:26 4:1 6:0 (truncated away) 8:0
EXPECTED_COUNTS = [21, 6, 2, 0, 2, 0]  # of each user's test target, users 1..6
EXPECTED_BUCKETS = ['20+', '5-19', '1-4', '0', '1-4', '0']


def small_split():
    return split_examples(SimpleNamespace(sequences=SEQUENCES), MAX_LEN)


def test_counts_are_occurrences_among_the_training_labels_and_map_to_buckets():
    splits = small_split()
    targets = splits['test'][2]
    assert targets.tolist() == [9, 5, 2, 6, 3, 6]
    counts = target_counts(splits['train'][1], targets)
    assert counts.tolist() == EXPECTED_COUNTS
    assert [BUCKETS[i][0] for i in bucket_indices(counts).tolist()] == EXPECTED_BUCKETS
    edges = torch.tensor([0, 1, 4, 5, 19, 20, 1000])
    assert [BUCKETS[i][0] for i in bucket_indices(edges).tolist()] == ['0', '1-4', '1-4', '5-19', '5-19', '20+', '20+']


def test_hand_computed_metrics_per_bucket():
    splits = small_split()
    targets = splits['test'][2]
    ranks = exact_ranks(torch.tensor([[1, 3, 2, 1, 5, 2],     # size 8, users 1..6
                                      [4, 1, 1, 7, 2, 1]]))   # size 16
    report = popularity_report(ranks, [8, 16], [1, 2], target_counts(splits['train'][1], targets), targets)
    assert report['buckets'] == {'0': [0, 0], '1-4': [1, 4], '5-19': [5, 19], '20+': [20, None]}
    assert report['users'] == {'0': 2, '1-4': 2, '5-19': 1, '20+': 1}
    assert report['items'] == {'0': 1, '1-4': 2, '5-19': 1, '20+': 1}  # users 4 and 6 share item 6
    ndcg2 = 1 / math.log2(3)
    # with ranks of 1 or more than 2, Recall@1 = NDCG@1 = MRR@1
    metrics = lambda r1, n2, m2, rec2: {'Recall@1': r1, 'NDCG@1': r1, 'MRR@1': r1,
                                        'Recall@2': rec2, 'NDCG@2': n2, 'MRR@2': m2, TIED_SHARE: 0.0}
    expected = {
        '8': {'0': metrics(0.5, (1 + ndcg2) / 2, 0.75, 1.0),     # ranks 1, 2
              '1-4': metrics(0.0, ndcg2 / 2, 0.25, 0.5),         # ranks 2, 5
              '5-19': metrics(0.0, 0.0, 0.0, 0.0),               # rank 3
              '20+': metrics(1.0, 1.0, 1.0, 1.0)},               # rank 1
        '16': {'0': metrics(0.5, 0.5, 0.5, 0.5),                 # ranks 7, 1
               '1-4': metrics(0.5, (1 + ndcg2) / 2, 0.75, 1.0),  # ranks 1, 2
               '5-19': metrics(1.0, 1.0, 1.0, 1.0),              # rank 1
               '20+': metrics(0.0, 0.0, 0.0, 0.0)},              # rank 4
    }
    for size, buckets in expected.items():
        for bucket, values in buckets.items():
            assert report['by_size'][size][bucket] == pytest.approx(values, abs=1e-15), (size, bucket)
    assert list(report['by_size']['8']['0']) == ['Recall@1', 'NDCG@1', 'MRR@1', 'Recall@2', 'NDCG@2', 'MRR@2',
                                                 TIED_SHARE]


def weighted_means(report, size):
    total = sum(report['users'].values())
    names = next(iter(report['by_size'][size].values()))
    return {name: sum(report['users'][b] * values[name] for b, values in report['by_size'][size].items()
                      if report['users'][b]) / total for name in names}


def test_user_weighted_bucket_means_equal_the_overall_metrics_and_empty_buckets_are_null():
    generator = torch.Generator().manual_seed(0)
    users, sizes, ks = 500, [8, 16, 32], [5, 10, 20, 50]
    best = torch.randint(1, 80, (len(sizes), users), generator=generator)
    tied_others = torch.randint(0, 3, best.shape, generator=generator) * torch.randint(0, 2, best.shape,
                                                                                         generator=generator)
    ranks = torch.stack([best, best + tied_others], dim=-1)  # about a third of the targets tie
    counts = torch.randint(0, 20, (users,), generator=generator)  # no target reaches 20: '20+' is empty
    targets = torch.randint(1, 300, (users,), generator=generator)
    report = popularity_report(ranks, sizes, ks, counts, targets)
    overall = metrics_from_ranks(ranks, sizes, ks)
    assert sum(report['users'].values()) == users and report['users']['20+'] == 0 and report['items']['20+'] == 0
    for row, size in enumerate(sizes):
        assert set(report['by_size'][str(size)]['20+'].values()) == {None}
        means = weighted_means(report, str(size))
        assert means.pop(TIED_SHARE) == pytest.approx((tied_others[row] > 0).double().mean().item(), rel=1e-12)
        assert means == pytest.approx(overall[size], rel=1e-12, abs=1e-15)
    json.dumps(report, allow_nan=False)  # null, never NaN
    table = popularity_table(report)
    assert '| 20+ | 0 | – | – |' in table and table.splitlines()[0] == '| bucket | users | NDCG@10 | Recall@10 |'


@pytest.fixture(scope='module')
def sparse_demo_run(demo_root, tmp_path_factory):
    """A 1-epoch run on the first 150 demo users: few enough interactions that targets fall in
    every bucket (the full demo puts all of them in 20+)."""
    base = tmp_path_factory.mktemp('popularity')
    shutil.copytree(demo_root / 'demo', base / 'data' / 'demo')
    sequences = base / 'data' / 'demo' / 'sequential_data.txt'
    sequences.write_text(''.join(sequences.read_text().splitlines(keepends=True)[:150]))
    run = base / 'run'
    by_size = train_script.main(['--dataset_code', 'demo', '--data_root', str(base / 'data'), '--export_root', str(run),
                                 '--mrl_hidden_sizes', '8,16', '--num_epochs', '1', '--train_batch_size', '64',
                                 '--no-use_tensorboard', '--device', 'cpu'])
    return run, by_size


def test_train_writes_the_popularity_file_and_its_buckets_add_up(sparse_demo_run):
    run, by_size = sparse_demo_run
    report = json.loads((run / 'test_mrl_metrics_by_popularity.json').read_text())
    assert list(report['by_size']) == ['8', '16'] and sum(report['users'].values()) == 150
    assert sum(1 for users in report['users'].values() if users) >= 3, report['users']
    for size in ('8', '16'):
        assert weighted_means(report, size) == pytest.approx(by_size[size], rel=1e-12, abs=1e-15)
        assert set(report['by_size'][size]['1-4']) == set(by_size[size])


def test_eval_writes_the_popularity_file_with_the_protocol_suffix(sparse_demo_run, capsys):
    run, by_size = sparse_demo_run
    written = (run / 'test_mrl_metrics_by_popularity.json').read_text()
    eval_script.main(['--export_root', str(run), '--device', 'cpu', '--mask_history'])
    masked = json.loads((run / 'test_mrl_metrics_by_popularity_masked.json').read_text())
    masked_overall = json.loads((run / 'test_mrl_metrics_masked.json').read_text())
    assert (run / 'test_mrl_metrics_by_popularity.json').read_text() == written  # the run's own file is kept
    assert weighted_means(masked, '16') == pytest.approx(masked_overall['16'], rel=1e-12, abs=1e-15)
    output = capsys.readouterr().out
    assert 'Size 16 by target popularity' in output and '| bucket | users | NDCG@10 | Recall@10 |' in output


def test_eval_tie_bounds_write_their_own_files_and_an_id_model_has_no_ties(sparse_demo_run):
    run, by_size = sparse_demo_run
    written = (run / 'test_mrl_metrics.json').read_text()
    for bound in ('first', 'last'):
        eval_script.main(['--export_root', str(run), '--device', 'cpu', '--ties', bound])
        assert (run / 'test_mrl_metrics.json').read_text() == written
        assert (run / f'test_mrl_metrics_by_popularity_ties_{bound}.json').exists()
        # a learned row per item: no two items score exactly alike, so every rule gives the same
        # metrics, bit for bit (the same ranks, so the same sums)
        assert json.loads((run / f'test_mrl_metrics_ties_{bound}.json').read_text()) == json.loads(written)
    assert {values[TIED_SHARE] for values in json.loads(written).values()} == {0.0}
    with pytest.raises(SystemExit):
        eval_script.parse_eval_args(['--export_root', str(run), '--ties', 'last', '--eval_mode', 'plot'])
