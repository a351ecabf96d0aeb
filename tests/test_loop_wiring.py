"""Wiring of the training loop and the final test that only these tests pin: every epoch trains every
user once (the last, partial batch included) in an order of its own, validation ranks under the
run's --mask_history, the final test reads the best checkpoint even when a newer one exists, and
the popularity buckets count the test target among the training labels only."""
import json
import pytest
import torch

from config import parse_args
from evaluation.evaluate import evaluate
from evaluation.final_evaluation import evaluate_best_checkpoint
from evaluation.metrics import TIED_SHARE
from runs.run_folder import RECENT_CHECKPOINT, STATE_DICT_KEY, popularity_path
from runs.run_inputs import build_model, load_data
from tests.fake_run import copy_demo, make_run, randomise
from tests.test_training_loop import BATCH, NUM_USERS, make_trainer


def flat(by_size):
    """{(size, metric): value}, sizes as ints (pytest.approx compares flat mappings only)."""
    return {(int(size), name): value for size, metrics in by_size.items() for name, value in metrics.items()
            if name != TIED_SHARE}


def test_each_epoch_trains_every_user_once_in_an_order_of_its_own(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path / 'a', ['--num_epochs', '2'])
    batches = []
    real_batch = trainer.batch
    monkeypatch.setattr(trainer, 'batch', lambda indices: (batches.append(indices.tolist()), real_batch(indices))[1])
    orders = []
    for epoch in (0, 1):
        batches.clear()
        trainer.train_epoch(epoch)
        assert [len(b) for b in batches] == [BATCH, BATCH, NUM_USERS - 2 * BATCH]  # the partial batch trains
        orders.append([user for b in batches for user in b])
        assert sorted(orders[-1]) == list(range(NUM_USERS))
    assert orders[0] != orders[1]  # a fresh shuffle each epoch (1 in 10! to agree by chance)
    # and a function of (seed, epoch) only: another trainer draws the same orders
    again = make_trainer(tmp_path / 'b', ['--num_epochs', '2'])
    assert [again.epoch_order(e).tolist() for e in (0, 1)] == orders


def test_validation_ranks_under_the_runs_history_protocol(tmp_path):
    found = {}
    for mask in (False, True):
        trainer = make_trainer(tmp_path / str(mask), ['--mask_history', str(mask)])
        found[mask] = trainer.validate()
        direct = evaluate(trainer.model, trainer.val_examples, trainer.sizes, trainer.args.metric_ks,
                          mask_history=mask, progress=False)
        assert flat(found[mask]) == pytest.approx(flat(direct), abs=1e-12)
    assert found[True] != found[False]  # the protocols differ on these users, so the check above can fail


@pytest.fixture()
def demo_run(tmp_path, demo_root):
    data_root = copy_demo(demo_root, tmp_path / 'data')
    run = tmp_path / 'run'
    best = make_run(run, data_root, seed=0)
    args = parse_args(['--dataset_code', 'demo', '--data_root', str(data_root), '--export_root', str(run),
                       '--mrl_hidden_sizes', '4,8,16,32'])
    return args, best


def test_the_final_test_reads_the_best_checkpoint_when_a_newer_one_exists(demo_run):
    args, best = demo_run
    data, splits, features = load_data(args, say=lambda _: None)
    newer = randomise(build_model(args, data.num_items, features), seed=1)
    torch.save({STATE_DICT_KEY: newer.state_dict()}, args.export_root + f'/models/{RECENT_CHECKPOINT}')
    expected = evaluate(best, splits['test'], args.mrl_hidden_sizes, args.metric_ks, progress=False)
    other = evaluate(newer, splits['test'], args.mrl_hidden_sizes, args.metric_ks, progress=False)
    assert expected != other
    # the model in memory holds the newer weights, as at the end of training
    found = evaluate_best_checkpoint(args, newer, splits['test'], args.export_root, 'cpu', progress=False,
                                     training_examples=splits['train'])
    assert flat(found) == pytest.approx(flat(expected), abs=1e-12)


def write_tiny_dataset(folder, sequences, num_items):
    folder.mkdir(parents=True)
    (folder / 'sequential_data.txt').write_text(''.join(f'{u} ' + ' '.join(map(str, s)) + '\n'
                                                        for u, s in sequences.items()))
    (folder / 'datamaps.json').write_text(json.dumps({'item2id': {f'A{i}': str(i) for i in range(1, num_items + 1)}}))


def test_popularity_buckets_count_the_target_among_training_labels_only(tmp_path):
    """Item 1 is only ever a validation or test target (bucket 0); item 2 is the last training item
    of five users, a label there but never an input (bucket 5-19 counting labels, 0 counting inputs);
    items 3..7 fill the histories. Counting validation targets or inputs moves users between buckets."""
    sequences = {}
    for user in range(1, 6):                      # ... 2 | val 1 | test 1
        sequences[user] = [3 + user % 5, 4, 2, 1, 1]
    for user in range(6, 9):                      # test target 2 (five training labels)
        sequences[user] = [5, 6, 7, 2]
    for user in range(9, 13):                     # test target 8, also a validation target four times
        sequences[user] = [5, 6, 8, 8]
    write_tiny_dataset(tmp_path / 'data' / 'tiny', sequences, 8)
    run = tmp_path / 'run'
    id_only = ['--dataset_code', 'tiny', '--use_language_encoder', 'False', '--use_img_encoder', 'False']
    best = make_run(run, tmp_path / 'data', extra_args=id_only)
    args = parse_args(['--data_root', str(tmp_path / 'data'), '--export_root', str(run),
                       '--mrl_hidden_sizes', '4,8,16,32'] + id_only)
    _, splits, _ = load_data(args, say=lambda _: None)
    evaluate_best_checkpoint(args, best, splits['test'], args.export_root, 'cpu', progress=False,
                             training_examples=splits['train'])
    report = json.loads(popularity_path(run).read_text())
    # users 1-5: target 1, never a training label -> 0; users 6-8: target 2, five labels -> 5-19;
    # users 9-12: target 8, a training label of nobody (their 8s are validation and test) -> 0
    assert report['users'] == {'0': 9, '1-4': 0, '5-19': 3, '20+': 0}
    assert report['items'] == {'0': 2, '1-4': 0, '5-19': 1, '20+': 0}
    # eval.py passes the same training labels: its report is the same
    popularity_path(run).unlink()
    import eval as eval_script
    eval_script.main(['--export_root', str(run), '--force', '--device', 'cpu'])
    assert json.loads(popularity_path(run).read_text())['users'] == report['users']


def test_eval_and_export_score_a_whitened_run_with_whitened_features(tmp_path, demo_root):
    """The expected metrics come from features whitened here, independently of the load path that
    eval.py and export.py share with the fake run (a bug there would fool a comparison with it)."""
    from datasets.feature_preprocessing import preprocess_features
    from runs.run_folder import load_best_weights, read_test_metrics
    from runs.run_inputs import load_raw_features
    from runs.trained_run import load_trained_run
    import eval as eval_script
    data_root, run = copy_demo(demo_root, tmp_path / 'data'), tmp_path / 'run'
    options = ['--feature_preprocessing', 'whiten']
    make_run(run, data_root, extra_args=options)
    args = parse_args(['--dataset_code', 'demo', '--data_root', str(data_root), '--export_root', str(run),
                       '--mrl_hidden_sizes', '4,8,16,32', *options])
    data, splits, _ = load_data(args, say=lambda _: None)
    raw = load_raw_features(args, data.num_items)
    by_hand = {m: None if t is None else preprocess_features(t, 'whiten', m) for m, t in raw.items()}
    expected, unwhitened = [], []
    for tables, out in ((by_hand, expected), (raw, unwhitened)):
        model = build_model(args, data.num_items, tables)
        load_best_weights(model, run, 'cpu')
        out.append(evaluate(model.eval(), splits['test'], args.mrl_hidden_sizes, args.metric_ks, progress=False))
    assert flat(expected[0]) != pytest.approx(flat(unwhitened[0]), abs=1e-9)  # whitening matters here
    eval_script.main(['--export_root', str(run), '--force', '--device', 'cpu'])
    assert flat(read_test_metrics(run)) == pytest.approx(flat(expected[0]), abs=1e-12)
    # export.py, recommend.py and the size summary load through load_trained_run: the same features
    _, _, loaded = load_trained_run(run)
    assert flat(evaluate(loaded, splits['test'], args.mrl_hidden_sizes, args.metric_ks, progress=False)) == \
        pytest.approx(flat(expected[0]), abs=1e-12)


def test_masking_the_history_never_masks_a_repeated_target():
    """A user who bought the target before: with --mask_history the other history items leave the
    ranking, the target stays rankable, and its best and worst ranks are those of a copy in which
    only the other history items are set to -inf."""
    from evaluation.evaluate import excluded_items
    from evaluation.metrics import BEST, WORST, target_ranks
    histories = torch.tensor([[3, 5, 7, 0], [2, 2, 4, 4]])
    targets = torch.tensor([5, 4])
    excluded = excluded_items(histories, targets)
    assert [sorted(i for i in row.tolist() if i >= 0) for row in excluded] == [[0, 3, 7], [0, 2]]
    scores = torch.tensor([[0.0, 1.0, 2.0, 9.0, 3.0, 5.0, 6.0, 8.0],
                           [0.0, 1.0, 9.0, 2.0, 6.0, 6.0, 3.0, 7.0]])
    ranks = target_ranks(scores, targets, excluded)
    copy = scores.clone()
    copy[0, [0, 3, 7]] = float('-inf')
    copy[1, [0, 2]] = float('-inf')
    assert torch.equal(ranks, target_ranks(copy, targets))
    # row 0: item 6 is the only unmasked item above 5 -> rank 2; row 1: 7 above, 5 ties -> ranks 2..3
    assert ranks[:, BEST].tolist() == [2, 2] and ranks[:, WORST].tolist() == [2, 3]
