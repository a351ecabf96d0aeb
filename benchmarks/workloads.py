"""The benchmark's workloads: training steps and evaluation passes of the fast and reference paths.

The fast step is the trainer's own (`Trainer.batch` + `Trainer.train_step`: host packing, copy,
autocast, loss, backward, clipping, AdamW). The reference step is the same step with the loss of
`model/reference.py` (per-chunk linears, every position, per-size score matmuls). The reference
evaluation projects the item table for every batch, scores every position and sorts all items.
"""
import tempfile

import torch

from config import parse_args
from evaluation.evaluate import evaluate_ranks
from evaluation.metrics import BEST
from model.reference import reference_loss, reference_ranks
from trainer.trainer import Trainer
from utils.runtime import autocast


def make_trainer(model, splits, sizes, batch_size, device, amp='none'):
    """A Trainer with the project's defaults (AdamW, clipping, schedule) around `model`."""
    args = parse_args(['--dataset_code', 'benchmark', '--train_batch_size', str(batch_size),
                       '--mrl_hidden_sizes', ','.join(str(s) for s in sizes), '--amp', amp,
                       '--num_epochs', '1', '--export_root', tempfile.gettempdir()])
    return Trainer(args, model, splits, args.export_root, device, {})


def fast_step(trainer, indices, amp):
    trainer.args.amp = amp
    return trainer.train_step(*trainer.batch(indices))[0]


def reference_step(trainer, indices):
    """Trainer.train_step with the reference loss on the unpacked (B, L) batch."""
    loss = reference_loss_and_grads(trainer, indices)
    torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.args.max_grad_norm)
    trainer.optimizer.step()
    trainer.scheduler.step()
    return loss


def fast_loss_and_grads(trainer, indices, amp):
    """Forward and backward only (no update): what the FLOP count and the bf16 comparison need."""
    packed, targets = trainer.batch(indices)
    trainer.model.zero_grad(set_to_none=True)
    with autocast(trainer.device, amp):
        loss, _ = trainer.model(packed, targets, trainer.args.mrl_loss)
    loss.backward()
    return loss.detach()


def reference_loss_and_grads(trainer, indices):
    """The reference loss and its gradients on the unpacked (B, L) batch (no update)."""
    tokens = trainer.tokens[indices].to(trainer.device)
    labels = trainer.labels[indices].to(trainer.device)
    trainer.model.zero_grad(set_to_none=True)
    loss, _ = reference_loss(trainer.model, tokens, labels, trainer.args.mrl_loss)
    loss.backward()
    return loss.detach()


def fast_eval(model, examples, num_sizes, batch_size, device, amp, users=None):
    """(M, U) ranks of the first `users` users by the project's evaluator (one pass): each target's best
    rank (ahead of its ties), which is the reference's stable-sort rank wherever nothing ties."""
    _, inputs, targets, histories = examples
    users = len(inputs) if users is None else users
    return evaluate_ranks(model, inputs[:users], targets[:users], histories[:users], num_sizes, batch_size,
                          device, amp=amp, progress=False)[..., BEST]


def reference_eval_batch(model, examples, start, batch_size, device):
    """(M, B) ranks of one batch, the released way (table per batch, all positions, full sort)."""
    _, inputs, targets, _ = examples
    was_training = model.training
    model.eval()
    ranks = reference_ranks(model, inputs[start:start + batch_size].to(device),
                            targets[start:start + batch_size].to(device))
    model.train(was_training)
    return ranks
