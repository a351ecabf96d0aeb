"""The cold-start protocol (datasets/cold_start.py): which items are held out, that training never sees
them (inputs, labels, softmax), that the loss with them left out equals the reference's with their
logits at -inf, and the run folder's report of the users whose test target is one of them."""
import json

import pytest
import torch
import torch.nn.functional as F

from config import parse_args
from datasets.cold_start import held_out_items, without_items
from datasets.p5 import SequenceData, split_examples
from model import FMRLRec
from model.reference import reference_scores
from tests.batches import random_training_batch
from tests.test_fast_path import assert_close_grads, gradients, make_model

NUM_ITEMS = 40


def test_held_out_items_are_seeded_sorted_and_a_share_of_the_catalogue():
    items = held_out_items(1000, 0.05, seed=0)
    assert len(items) == 50 and items.tolist() == sorted(set(items.tolist()))
    assert int(items.min()) >= 1 and int(items.max()) <= 1000
    assert torch.equal(items, held_out_items(1000, 0.05, seed=0))
    assert not torch.equal(items, held_out_items(1000, 0.05, seed=1))
    assert len(held_out_items(10, 0.01, seed=0)) == 1  # at least one
    with pytest.raises(ValueError, match='all 10 items'):
        held_out_items(10, 0.99, seed=0)


def test_training_never_sees_a_held_out_item_and_evaluation_keeps_every_user():
    generator = torch.Generator().manual_seed(0)
    sequences = {user: torch.randint(1, NUM_ITEMS + 1, (int(torch.randint(3, 12, (1,), generator=generator)),),
                                     generator=generator).tolist() for user in range(1, 61)}
    sequences[61] = [7, 8, 1, 2]  # training sequence [7, 8]: all held out, so the user trains on nothing
    data = SequenceData(None, sequences, NUM_ITEMS)
    held_out = torch.tensor([7, 8, 30])
    plain, cold = split_examples(data, 6), split_examples(data, 6, held_out)
    tokens, labels = cold['train']
    assert not torch.isin(tokens, held_out).any() and not torch.isin(labels, held_out).any()
    assert 61 not in cold['train_sequences'] and len(tokens) == len(plain['train'][0]) - 1
    assert cold['train_sequences'] == without_items(plain['train_sequences'], held_out)
    for split in ('val', 'test'):  # the same users, histories (held-out items included) and targets
        assert all(torch.equal(a, b) for a, b in zip(plain[split], cold[split]))
    assert torch.equal(cold['held_out'], held_out) and plain['held_out'] is None


def masked_reference_loss(model, tokens, labels, excluded):
    """The reference loss with the excluded items' logits at -inf (left out of every softmax)."""
    scores = reference_scores(model, tokens)
    per_size = []
    for size_scores in scores:
        logits = size_scores.reshape(-1, size_scores.shape[-1]).clone()
        logits[:, excluded] = float('-inf')
        per_size.append(F.cross_entropy(logits, labels.reshape(-1), ignore_index=0))
    per_size = torch.stack(per_size)
    return per_size.sum(), per_size.detach()


def excluded_batch(seed):
    """A training batch of items 1..30 and held-out items among 31..40: as under the protocol, never
    a label nor an input."""
    tokens, labels = random_training_batch([4, 1, 13, 2, 7, 10], 10, 30, seed)
    return tokens, labels, torch.tensor([31, 33, 34, 38, 40])


def model_of_kind(kind):
    if kind == 'features':
        return make_model([4, 8, 16], 2, None)
    torch.manual_seed(1)
    text = torch.randn(NUM_ITEMS + 1, 12)
    text[0] = 0
    return FMRLRec(NUM_ITEMS, [4, 8, 16], text if kind == 'hybrid' else None, None, num_blocks=1, dropout=0.0,
                   attn_dropout=0.0, item_id_embedding=kind == 'hybrid')


@pytest.mark.parametrize('item_chunk', [None, 7])
@pytest.mark.parametrize('kind', ['features', 'hybrid', 'id'])
def test_loss_without_the_held_out_items_equals_the_reference_with_their_logits_at_minus_infinity(kind, item_chunk):
    model = model_of_kind(kind)
    tokens, labels, excluded = excluded_batch(seed=4)
    if kind != 'features':  # the ID rows become zero: the plain loss must see the same table
        model.exclude_from_training(excluded)
        model.training_exclusion = None
    model.set_fast_path(loss_item_chunk=item_chunk)
    plain_per_size = model.loss(tokens, labels)[1]
    model.exclude_from_training(excluded)
    reference, reference_per_size = masked_reference_loss(model, tokens, labels, excluded)
    reference_grads = gradients(model, reference)
    # every split between projected and factored chunks of the feature model
    for projected in (range(4) if kind == 'features' else [None]):
        model.set_fast_path(projected_chunks=projected)
        loss, per_size = model.loss(tokens, labels)
        assert torch.allclose(per_size, reference_per_size, rtol=1e-5, atol=1e-5), projected
        assert_close_grads(gradients(model, loss), reference_grads, rtol=1e-4, atol=1e-5)
    # leaving the items out changes the loss (the comparison above is not vacuous)
    assert not torch.allclose(plain_per_size, reference_per_size, rtol=1e-4)


@pytest.mark.parametrize('kind', ['hybrid', 'id'])
def test_held_out_id_rows_are_zero_and_get_no_gradient(kind):
    model = model_of_kind(kind)
    tokens, labels, excluded = excluded_batch(seed=6)
    model.exclude_from_training(excluded)
    table = model.id_embedding.weight
    assert (table[excluded] == 0).all() and (table[1:].abs().sum(1) > 0).sum() == NUM_ITEMS - len(excluded)
    grads = gradients(model, model.loss(tokens, labels)[0])
    assert (grads['id_embedding.weight'][excluded] == 0).all()
    assert grads['id_embedding.weight'].abs().sum() > 0


def test_the_options_are_checked():
    args = parse_args(['--cold_start'])
    assert args.cold_start and args.cold_start_share == 0.05 and args.cold_start_seed == 0
    assert not parse_args([]).cold_start
    for argv, message in ((['--cold_start_share', '0.1'], 'which is off'),
                          (['--cold_start', '--cold_start_share', '1.5'], r'in \(0, 1\)'),
                          (['--cold_start_seed', '3'], 'which is off')):
        with pytest.raises(SystemExit):
            parse_args(argv)


def test_a_demo_run_holds_out_its_items_and_reports_their_users(tmp_path, demo_root, capsys):
    import eval as eval_script
    import train as train_script
    from runs.run_folder import STATE_DICT_KEY, best_checkpoint_path, load_checkpoint
    run = tmp_path / 'cold'
    argv = ['--dataset_code', 'demo', '--data_root', str(demo_root), '--export_root', str(run), '--mrl_hidden_sizes',
            '8,16', '--num_epochs', '1', '--no-use_tensorboard', '--use_img_encoder', 'False', '--item_id_embedding',
            '--cold_start', '--cold_start_share', '0.1', '--cold_start_seed', '3']
    by_size = train_script.main(argv)
    held_out = held_out_items(320, 0.1, 3)
    report = json.loads((run / 'test_mrl_metrics_cold_start.json').read_text())
    assert report['held_out_item_ids'] == held_out.tolist() and not report['items_in_training']
    assert (report['share'], report['seed'], report['all_users']) == (0.1, 3, 1200)
    # the reported users are those whose test target (each user's last item) is held out
    sequences = [line.split() for line in (demo_root / 'demo' / 'sequential_data.txt').read_text().splitlines()]
    assert report['users'] == sum(int(s[-1]) in set(held_out.tolist()) for s in sequences) > 0
    # their metrics are the overall metrics' share: the other users' metrics make up the rest
    popularity = json.loads((run / 'test_mrl_metrics_by_popularity.json').read_text())
    assert popularity['users']['0'] >= report['users']  # held-out items are never training targets
    assert 0 <= report['by_size']['16']['NDCG@10'] <= 1 and by_size['16']['NDCG@10'] > 0
    state = load_checkpoint(best_checkpoint_path(run))[STATE_DICT_KEY]
    assert (state['id_embedding.weight'][held_out] == 0).all()  # never trained: still zero
    assert 'Cold start, ' in capsys.readouterr().out
    # eval.py tests the run with its own items; other items are refused
    eval_script.main(['--export_root', str(run), '--force'])
    assert json.loads((run / 'test_mrl_metrics_cold_start.json').read_text()) == report
    with pytest.raises(SystemExit, match='trained with --cold_start_share 0.1'):
        eval_script.main(['--export_root', str(run), '--force', '--cold_start', '--cold_start_share', '0.2'])


def test_eval_reports_the_same_users_for_a_run_trained_on_every_item(tmp_path, demo_root):
    import eval as eval_script
    import train as train_script
    run = tmp_path / 'warm'
    train_script.main(['--dataset_code', 'demo', '--data_root', str(demo_root), '--export_root', str(run),
                       '--mrl_hidden_sizes', '8,16', '--num_epochs', '1', '--no-use_tensorboard'])
    assert not (run / 'test_mrl_metrics_cold_start.json').exists()
    eval_script.main(['--export_root', str(run), '--force', '--cold_start', '--cold_start_share', '0.1',
                      '--cold_start_seed', '3'])
    report = json.loads((run / 'test_mrl_metrics_cold_start.json').read_text())
    assert report['items_in_training'] and report['held_out_item_ids'] == held_out_items(320, 0.1, 3).tolist()
    with pytest.raises(SystemExit):
        eval_script.parse_eval_args(['--export_root', str(run), '--cold_start_seed', '3'])


def test_a_share_that_holds_out_every_item_is_one_line(tmp_path, demo_root):
    import train as train_script
    with pytest.raises(SystemExit, match='error: --cold_start_share 0.999 would hold out all 320 items'):
        train_script.main(['--dataset_code', 'demo', '--data_root', str(demo_root), '--export_root',
                           str(tmp_path / 'run'), '--cold_start', '--cold_start_share', '0.999', '--num_epochs', '1'])
