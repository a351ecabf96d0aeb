"""The hybrid's training-only remedies for items without a trained ID row (docs/content_features.md,
Cold start): ID-row dropout and the content-only loss term, each equal to its reference, and neither
changes what the model scores."""
import copy

import pytest
import torch
import torch.nn.functional as F

from config import parse_args
from model import FMRLRec
from model.reference import reference_hidden, reference_loss
from tests.batches import random_training_batch
from tests.test_fast_path import assert_close_grads, gradients
from tests.test_hybrid import NUM_ITEMS, SIZES, hybrid_model


def batch(seed=2):
    return random_training_batch([5, 1, 14, 3, 9], 12, NUM_ITEMS, seed)


def test_id_dropout_drops_whole_rows_the_same_for_inputs_and_scores():
    model = hybrid_model(('text',))
    model.id_dropout = 0.4
    tokens, labels = batch()
    torch.manual_seed(11)
    loss, per_size = model.loss(tokens, labels)
    grads = gradients(model, loss)
    torch.manual_seed(11)
    keep = torch.rand(NUM_ITEMS + 1, 1) >= 0.4  # the draw the step makes
    assert 0 < int(keep.sum()) < NUM_ITEMS + 1
    dropped = copy.deepcopy(model)
    dropped.id_dropout = 0.0
    with torch.no_grad():
        dropped.id_embedding.weight.mul_(keep)
    reference, reference_per_size = reference_loss(dropped, tokens, labels)
    assert torch.allclose(per_size, reference_per_size, rtol=1e-5, atol=1e-5)
    reference_grads = gradients(dropped, reference)
    # the chain rule through rows * keep: a dropped row gets no gradient, a kept one the reference's
    reference_grads['id_embedding.weight'] = reference_grads['id_embedding.weight'] * keep
    assert_close_grads(grads, reference_grads, rtol=1e-4, atol=1e-5)
    assert (grads['id_embedding.weight'][~keep.squeeze(1)] == 0).all()


def test_content_loss_adds_the_loss_of_the_projected_features_alone():
    model = hybrid_model(('text',), num_blocks=1)
    tokens, labels = batch(seed=4)
    plain, per_size = model.loss(tokens, labels)
    model.content_loss_weight = 0.7
    loss, same_per_size = model.loss(tokens, labels)
    assert torch.equal(per_size, same_per_size)  # the per-size losses logged are the hybrid's own
    # the reference: the hybrid's hidden states against the projected features, without ID rows
    hidden = reference_hidden(model, tokens)
    projected = F.linear(model.item_features, model.projection.weight, model.projection.bias)
    content = sum(F.cross_entropy((hidden[..., :s] @ projected[:, :s].t()).reshape(-1, NUM_ITEMS + 1),
                                  labels.reshape(-1), ignore_index=0) for s in SIZES)
    reference = reference_loss(model, tokens, labels)[0] + 0.7 * content
    assert torch.allclose(loss, reference, rtol=1e-5)
    assert_close_grads(gradients(model, loss), gradients(model, reference), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(loss, plain)


def test_the_remedies_never_change_the_scores():
    model = hybrid_model(('text',)).eval()
    tokens, _ = batch()
    before = model.scores(tokens)
    model.id_dropout, model.content_loss_weight = 0.5, 1.0
    assert torch.equal(model.scores(tokens), before)


def test_the_remedies_need_a_hybrid():
    text = torch.randn(NUM_ITEMS + 1, 8)
    with pytest.raises(ValueError, match='item_id_embedding is off'):
        FMRLRec(NUM_ITEMS, SIZES, text, None, id_dropout=0.5)
    for argv in (['--id_dropout', '0.5'], ['--content_loss_weight', '1', '--use_img_encoder', 'False'],
                 ['--item_id_embedding', '--id_dropout', '1.0'], ['--item_id_embedding', '--content_loss_weight', '-1']):
        with pytest.raises(SystemExit):
            parse_args(argv)
    args = parse_args(['--item_id_embedding', '--id_dropout', '0.3', '--content_loss_weight', '0.5'])
    assert (args.id_dropout, args.content_loss_weight) == (0.3, 0.5)
