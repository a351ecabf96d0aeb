"""The training loop's rules, each pinned through the Trainer against numbers derived here: the
learning rate at chosen steps of the warm-up and the cosine decay, the exact set of parameters
without weight decay, clipping, --mrl_loss mean as exactly 1/M of sum, the best checkpoint chosen
on --best_metric of the largest size, and early stopping after exactly `patience` bad epochs."""
import math

import pytest
import torch

from config import parse_args
from datasets.p5 import SequenceData, split_examples
from model import FMRLRec
from model.mrl import MRLLinear
from runs.run_folder import BEST_CHECKPOINT, STATE_DICT_KEY
from trainer.trainer import Trainer

NUM_ITEMS = 20
NUM_USERS = 10
BATCH = 4  # 10 users -> 3 steps per epoch (the last batch holds 2)


def sequences(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {user: torch.randint(1, NUM_ITEMS + 1, (3 + user % 5,), generator=generator).tolist()
            for user in range(1, NUM_USERS + 1)}


def make_trainer(tmp_path, options=(), sizes='4,8,16', seed=0, features=True):
    """A Trainer on 10 random users; dropout off, so that two trainers built alike compute alike."""
    args = parse_args(['--dataset_code', 'demo', '--data_root', str(tmp_path / 'data'),
                       '--export_root', str(tmp_path / 'run'), '--mrl_hidden_sizes', sizes,
                       '--train_batch_size', str(BATCH), '--lru_dropout', '0', '--lru_attn_dropout', '0',
                       '--no-use_tensorboard', *options])
    splits = split_examples(SequenceData(None, sequences(), NUM_ITEMS), args.lru_max_len)
    torch.manual_seed(seed)
    text = torch.randn(NUM_ITEMS + 1, 6) if features else None
    if text is not None:
        text[0] = 0
    model = FMRLRec(NUM_ITEMS, args.mrl_hidden_sizes, text_features=text, num_blocks=1, dropout=0.0,
                    attn_dropout=0.0, bias=args.lru_use_bias)
    return Trainer(args, model, splits, args.export_root, 'cpu', {})


def first_batch(trainer):
    return trainer.batch(trainer.epoch_order(0)[:BATCH])


def grad_norm(model):
    return torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None)).item()


# ---- the learning-rate schedule ----------------------------------------------------------------
def test_learning_rate_follows_the_warm_up_then_the_cosine_over_the_whole_run(tmp_path):
    """lr 1e-2, 4 warm-up steps, 4 epochs x 3 steps = 12 steps. The lr that step k uses is
    1e-2 * k / 4 for k < 4, then 1e-2 * (1 + cos(pi (k - 4) / 8)) / 2, hence the table below."""
    trainer = make_trainer(tmp_path, ['--lr', '1e-2', '--warmup_steps', '4', '--num_epochs', '4'])
    assert trainer.steps_per_epoch == 3
    expected = {0: 0.0, 1: 2.5e-3, 2: 5e-3, 3: 7.5e-3, 4: 1e-2, 8: 5e-3,
                10: 1e-2 * (1 - math.sqrt(0.5)) / 2, 11: 1e-2 * (1 - math.cos(math.pi / 8)) / 2}
    used = []
    order = trainer.epoch_order(0)
    for step in range(12):
        used.append([group['lr'] for group in trainer.optimizer.param_groups])
        trainer.train_step(*trainer.batch(order[(step % 3) * BATCH:(step % 3 + 1) * BATCH]))
    for step, lr in expected.items():
        assert used[step] == pytest.approx([lr, lr], abs=1e-12), (step, used[step])
    assert trainer.optimizer.param_groups[0]['lr'] == pytest.approx(0.0, abs=1e-12)  # the end of the run


def test_the_first_step_of_the_warm_up_moves_nothing_and_the_second_does(tmp_path):
    trainer = make_trainer(tmp_path, ['--lr', '1e-2', '--warmup_steps', '4', '--num_epochs', '4'])
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train_step(*first_batch(trainer))  # lr 0 (weight decay is scaled by lr too)
    assert all(torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    trainer.train_step(*first_batch(trainer))  # lr 2.5e-3
    assert not torch.equal(trainer.model.projection.weight, before['projection.weight'])


def test_without_the_schedule_the_learning_rate_is_constant(tmp_path):
    trainer = make_trainer(tmp_path, ['--lr', '3e-3', '--enable_lr_schedule', 'False', '--num_epochs', '2'])
    for _ in range(4):
        assert [g['lr'] for g in trainer.optimizer.param_groups] == [3e-3, 3e-3]
        trainer.train_step(*first_batch(trainer))


# ---- weight decay and clipping -----------------------------------------------------------------
def bias_names(model):
    """Every bias vector of the model, found by module type (not by name): those of nn.Linear and
    nn.LayerNorm, and each chunk's real and imaginary bias of an MRL linear."""
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, MRLLinear):
            for attribute in ('bias', 'bias_imag'):
                chunks = getattr(module, attribute, None)
                names.update(f'{prefix}.{attribute}.{k}' for k in range(len(chunks or [])))
        elif isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm)) and module.bias is not None:
            names.add(f'{prefix}.bias')
    return names


@pytest.mark.parametrize('options, features', [([], True), (['--lru_use_bias', 'False'], True), ([], False)],
                         ids=['features', 'no-mrl-bias', 'id-only'])
def test_exactly_the_biases_are_exempt_from_weight_decay(tmp_path, options, features):
    trainer = make_trainer(tmp_path, ['--weight_decay', '0.05', *options], features=features)
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    decay, no_decay = trainer.optimizer.param_groups
    assert decay['weight_decay'] == 0.05 and no_decay['weight_decay'] == 0.0
    exempt = {names[id(p)] for p in no_decay['params']}
    assert exempt == bias_names(trainer.model)
    assert {names[id(p)] for p in decay['params']} == set(names.values()) - exempt
    # what the released rule decays besides weights: LayerNorm scales and the LRU's eigenvalues
    assert {'blocks.0.input_norm.norms.0.weight', 'blocks.0.lru.params_log'} <= set(names.values()) - exempt


def test_gradients_are_clipped_to_max_grad_norm_before_the_step(tmp_path):
    unclipped = make_trainer(tmp_path, ['--max_grad_norm', '0'])
    unclipped.train_step(*first_batch(unclipped))
    assert grad_norm(unclipped.model) > 0.1  # so that a limit of 1e-3 is active below
    clipped = make_trainer(tmp_path, ['--max_grad_norm', '1e-3'])
    clipped.train_step(*first_batch(clipped))  # the gradients stay in .grad until the next step
    assert grad_norm(clipped.model) == pytest.approx(1e-3, rel=1e-4)
    for (name, p), q in zip(clipped.model.named_parameters(), unclipped.model.parameters()):
        if p.grad is not None:  # the same direction, scaled as a whole
            expected = q.grad * (1e-3 / grad_norm(unclipped.model))
            assert (p.grad - expected).abs().max() <= 1e-4 * expected.abs().max(), name


# ---- --mrl_loss ---------------------------------------------------------------------------------
def test_mrl_loss_mean_is_exactly_one_mth_of_sum_through_the_trainer(tmp_path):
    """Three sizes: the loss and (without clipping) every gradient of mean are those of sum / 3."""
    runs = {}
    for reduction in ('sum', 'mean'):
        trainer = make_trainer(tmp_path / reduction, ['--mrl_loss', reduction, '--max_grad_norm', '0'])
        loss, per_size = trainer.train_step(*first_batch(trainer))
        runs[reduction] = (loss, per_size, {n: p.grad.clone() for n, p in trainer.model.named_parameters()
                                            if p.grad is not None})
    (loss_sum, per_size_sum, grads_sum), (loss_mean, per_size_mean, grads_mean) = runs['sum'], runs['mean']
    assert torch.equal(per_size_sum, per_size_mean) and len(per_size_sum) == 3
    assert loss_sum.item() == pytest.approx(per_size_sum.sum().item(), rel=1e-6)
    assert loss_mean.item() == pytest.approx(loss_sum.item() / 3, rel=1e-6)
    assert grads_sum.keys() == grads_mean.keys()
    for name, grad in grads_sum.items():  # float32 rounding differs: compare on each tensor's own scale
        error = (grads_mean[name] - grad / 3).abs().max()
        assert error <= 1e-5 * grad.abs().max() / 3, (name, error)


# ---- best checkpoint and early stopping ----------------------------------------------------------
# Validation values by epoch. --best_metric Recall@5 at the largest size (8) improves at epochs
# 1, 2 and 4; epoch 5 ties (a tie is no improvement). The default metric (NDCG@10) and the
# smallest size (4) peak elsewhere, so choosing on either picks another epoch.
LARGEST_RECALL = [0.10, 0.30, 0.20, 0.35, 0.35, 0.34, 0.33, 0.32, 0.31, 0.30]
LARGEST_NDCG = [0.50, 0.10, 0.60, 0.10, 0.10, 0.70, 0.10, 0.10, 0.10, 0.10]
SMALLEST_RECALL = [0.90, 0.10, 0.10, 0.10, 0.10, 0.10, 0.95, 0.10, 0.10, 0.10]


def scripted(trainer):
    """Replace training by a marker (every weight set to the epoch number) and validation by the
    table above; returns the list of validated epochs."""
    validated = []

    def train_epoch(epoch):
        with torch.no_grad():
            trainer.model.projection.weight.fill_(epoch + 1)
        return 0.0

    def validate():
        epoch = len(validated)
        validated.append(epoch + 1)
        other = {'Recall@10': 0.5, 'NDCG@5': 0.5, 'MRR@5': 0.5, 'MRR@10': 0.5}
        return {4: {'Recall@5': SMALLEST_RECALL[epoch], 'NDCG@10': 0.5, **other},
                8: {'Recall@5': LARGEST_RECALL[epoch], 'NDCG@10': LARGEST_NDCG[epoch], **other}}

    trainer.train_epoch, trainer.validate = train_epoch, validate
    return validated


def best_checkpoint(trainer):
    return torch.load(trainer.models_dir / BEST_CHECKPOINT, map_location='cpu', weights_only=False)


def test_best_checkpoint_is_chosen_on_best_metric_at_the_largest_size(tmp_path):
    trainer = make_trainer(tmp_path, ['--num_epochs', '10', '--metric_ks', '5', '10', '--best_metric', 'Recall@5',
                                      '--no-early_stopping'], sizes='4,8')
    validated = scripted(trainer)
    trainer.fit()
    assert validated == list(range(1, 11))  # early stopping off: the whole budget
    assert (trainer.best_epoch, trainer.best_value) == (4, 0.35)
    saved = best_checkpoint(trainer)
    assert saved['epoch'] == 4 and saved['best_epoch'] == 4
    assert torch.all(saved[STATE_DICT_KEY]['projection.weight'] == 4)  # the weights of epoch 4


def test_early_stopping_stops_after_exactly_patience_bad_epochs(tmp_path):
    """Patience 2: epochs 3 (bad), 4 (best, resets the count), 5 (tie: bad), 6 (bad) -> stop after 6."""
    trainer = make_trainer(tmp_path, ['--num_epochs', '10', '--metric_ks', '5', '10', '--best_metric', 'Recall@5',
                                      '--early_stopping_patience', '2'], sizes='4,8')
    validated = scripted(trainer)
    trainer.fit()
    assert validated == [1, 2, 3, 4, 5, 6] and trainer.epoch == 6
    assert (trainer.best_epoch, trainer.bad_epochs) == (4, 2)
    assert best_checkpoint(trainer)['epoch'] == 4


def test_patience_one_stops_at_the_first_bad_epoch(tmp_path):
    trainer = make_trainer(tmp_path, ['--num_epochs', '10', '--metric_ks', '5', '10', '--best_metric', 'Recall@5',
                                      '--early_stopping_patience', '1'], sizes='4,8')
    validated = scripted(trainer)
    trainer.fit()
    assert validated == [1, 2, 3] and trainer.best_epoch == 2
