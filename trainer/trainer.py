"""The training loop: one loss over all nested sizes, validation each epoch, early stopping on the
largest size, best and recent checkpoints, logs.

Checkpoints are written at epoch ends only, atomically, the recent one last: it is the commit point
of an epoch. It holds everything the rest of the run depends on (model, optimizer, schedule,
counters, early-stopping state, every RNG state); the data order is a function of (seed, epoch).
So a run killed anywhere and resumed replays the interrupted epoch exactly (see docs/resume.md).
"""
import time
from pathlib import Path

import torch
from tqdm import tqdm

from evaluation.sharded import sharded_evaluate
from model import cpu_routes
from model.packing import pack_batch
from runs.loggers import MetricLoggers
from runs.run_folder import BEST_CHECKPOINT, RECENT_CHECKPOINT, STATE_DICT_KEY, models_dir, write_checkpoint
from trainer.distributed import SINGLE_PROCESS, local_share
from trainer.optim import build_optimizer, cosine_with_warmup
from trainer.rng import restore_rng_states, rng_states
from utils import thread_governor
from utils.runtime import autocast, kill_self, planned_fault, set_seed

OPTIMIZER_STATE_DICT_KEY = 'optimizer_state_dict'
RESUME_KEYS = (STATE_DICT_KEY, OPTIMIZER_STATE_DICT_KEY, 'scheduler_state_dict', 'epoch', 'global_step',
               'best_value', 'best_epoch', 'bad_epochs', 'rng_states')
FINITE_CHECK_EVERY = 25  # steps between checks of the loss: one host synchronisation each


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite. Nothing is saved after it: the checkpoints on disk
    are those of the last completed epoch."""

    def __init__(self, value, global_step, epoch, batch):
        self.value, self.global_step, self.epoch, self.batch = value, global_step, epoch, batch
        super().__init__(f'the training loss is {value} at step {global_step} (epoch {epoch}, '
                         f'batch {batch})')


def rank_seed(seed, rank, epoch=0):
    """The seed of rank > 0's own random stream (dropout differs across ranks; rank 0 keeps the
    stream of a 1-process run)."""
    return seed + 7919 * rank + 104729 * epoch


class Trainer:
    def __init__(self, args, model, splits, export_root, device, config_dict, group=SINGLE_PROCESS, loggers=None):
        """group: this process's place under torchrun (trainer/distributed.py); the default is one process.
        loggers: rank 0's MetricLoggers, kept open by the caller (train.py logs the test metrics to
        them too); None: fit() opens and closes its own."""
        self.args = args
        self.model = model
        self.device = torch.device(device)
        self.export_root = Path(export_root)
        self.models_dir = models_dir(self.export_root)
        self.sizes = list(args.mrl_hidden_sizes)
        self.tokens, self.labels = splits['train']
        self.val_examples = splits['val']
        self.steps_per_epoch = (len(self.tokens) + args.train_batch_size - 1) // args.train_batch_size
        self.optimizer = build_optimizer(model, args)
        self.scheduler = cosine_with_warmup(self.optimizer, args.warmup_steps,
                                            args.num_epochs * self.steps_per_epoch, args.enable_lr_schedule)
        self.config_dict = config_dict
        self.epoch = 0            # epochs completed
        self.saved_epoch = 0      # the epoch models/checkpoint-recent.pth holds (what a resume continues from)
        self.loggers = loggers
        self.global_step = 0
        self.best_value = -float('inf')
        self.best_epoch = -1
        self.bad_epochs = 0
        # The loss's catalogue chunk changes memory, not results (model/chunked_loss.py).
        model.set_fast_path(loss_item_chunk=getattr(args, 'loss_item_chunk', 0) or None)
        self.train_module = model  # what the step calls (a compiled or DDP-wrapped model)
        self.group = group
        self.is_main = group.is_main
        self.rng_states_by_rank = None  # gathered at each epoch end under torchrun
        self.kill_at_step = planned_fault('kill_at_step')  # test-only fault injection
        self.kill_in_save = planned_fault('kill_in_save')
        self.saves = 0

    # ---- batches -------------------------------------------------------------------------
    def epoch_order(self, epoch):
        """The user order of an epoch depends only on (seed, epoch): resumable and reproducible."""
        generator = torch.Generator().manual_seed(self.args.seed * 100003 + epoch)
        return torch.randperm(len(self.tokens), generator=generator)

    def batch(self, indices):
        tokens, labels = self.tokens[indices], self.labels[indices]
        query_mask = labels > 0
        packed, targets = pack_batch(tokens, query_mask), labels[query_mask]
        if self.device.type == 'cuda':
            packed, targets = packed.pin_memory(), targets.pin_memory()
        return packed.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)

    # ---- one step ------------------------------------------------------------------------
    def train_step(self, packed, targets, loss_scale=1.0):
        """One optimizer step; returns the unscaled loss. loss_scale: this rank's weight under DDP."""
        # Gradients freed before the forward, not after it: they would sit beside its activations.
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.args.amp):
            loss, per_size = self.train_module(packed, targets, self.args.mrl_loss)
        (loss if loss_scale == 1.0 else loss * loss_scale).backward()
        if self.args.max_grad_norm and self.args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1
        return loss.detach(), per_size

    def train_epoch(self, epoch):
        """Train one epoch; returns the mean loss. Raises NonFiniteLossError, naming the first
        non-finite step, at the first check after it (the loss is checked every
        FINITE_CHECK_EVERY steps and at the end, so the step itself never waits for the device)."""
        self.model.train()
        order = self.epoch_order(epoch)
        size = self.args.train_batch_size
        step_losses = torch.zeros(self.steps_per_epoch, device=self.device)
        checked = 0
        bar = tqdm(range(self.steps_per_epoch), desc=f'epoch {epoch + 1}', leave=False,
                   disable=not self.is_main)
        for step in bar:
            indices, loss_scale, share = local_share(order[step * size:(step + 1) * size], self.labels, self.group)
            loss, _ = self.train_step(*self.batch(indices), loss_scale)
            thread_governor.tick()  # fewer threads while other processes compete (utils/thread_governor.py)
            step_losses[step] = loss if share == 1.0 else loss * share  # summed over ranks: the global loss
            if self.kill_at_step == self.global_step:
                kill_self()
            if (step + 1) % FINITE_CHECK_EVERY == 0 or step + 1 == self.steps_per_epoch:
                window = self.group.sum_(step_losses[checked:step + 1].clone())
                step_losses[checked:step + 1] = window
                self.check_finite(window, epoch, checked)  # the same window on every rank: all stop together
                checked = step + 1
                bar.set_postfix(loss=f'{step_losses[:checked].mean().item():.4f}',
                                lr=f'{self.scheduler.get_last_lr()[0]:.2e}')
        return step_losses.mean().item()

    def check_finite(self, losses, epoch, first_batch):
        """Raise NonFiniteLossError if any of `losses` (batches first_batch.. of `epoch`) is not finite."""
        finite = torch.isfinite(losses)
        if bool(finite.all()):
            return
        bad = int((~finite).nonzero()[0])
        batch = first_batch + bad
        raise NonFiniteLossError(losses[bad].item(), epoch * self.steps_per_epoch + batch + 1,
                                 epoch + 1, batch + 1)

    # ---- validation and checkpoints ------------------------------------------------------
    def validate(self):
        return sharded_evaluate(self.model, self.val_examples, self.sizes, self.args.metric_ks,
                                self.args.val_batch_size, self.device, self.group, self.args.mask_history,
                                self.args.amp, description='validate')

    def state(self):
        return {
            STATE_DICT_KEY: self.model.state_dict(),
            OPTIMIZER_STATE_DICT_KEY: self.optimizer.state_dict(),
            'scheduler_state_dict': self.scheduler.state_dict(),
            'epoch': self.epoch, 'global_step': self.global_step,
            'best_value': self.best_value, 'best_epoch': self.best_epoch, 'bad_epochs': self.bad_epochs,
            'rng_states': rng_states(self.device), 'rng_states_by_rank': self.rng_states_by_rank,
            'world_size': self.group.world_size, 'config': self.config_dict,
            'cpu_routes': cpu_routes.taken() if self.device.type == 'cpu' else None,
        }

    def save(self, name):
        self.saves += 1
        crash = self._crash_mid_write if self.kill_in_save == self.saves else None
        write_checkpoint(self.export_root, name, self.state(), before_rename=crash)

    @staticmethod
    def _crash_mid_write(tmp):
        """Test-only: leave a half-written temporary file and die before the rename."""
        with open(tmp, 'r+b') as handle:
            handle.truncate(max(1, handle.seek(0, 2) // 2))
        kill_self()

    def load_state(self, checkpoint):
        self.model.load_state_dict(checkpoint[STATE_DICT_KEY])
        self.optimizer.load_state_dict(checkpoint[OPTIMIZER_STATE_DICT_KEY])
        self.scheduler.load_state_dict(checkpoint['scheduler_state_dict'])
        self.epoch, self.global_step = checkpoint['epoch'], checkpoint['global_step']
        self.best_value, self.best_epoch = checkpoint['best_value'], checkpoint['best_epoch']
        self.bad_epochs = checkpoint['bad_epochs']
        self.saved_epoch = self.epoch
        self.restore_rank_rng_states(checkpoint)
        self.pin_cpu_routes(checkpoint.get('cpu_routes'))

    def pin_cpu_routes(self, routes):
        """The CPU routes the run took before (model/cpu_routes.py), so that it rounds alike."""
        if self.device.type != 'cpu' or not routes:
            return
        if not cpu_routes.pin(routes) and self.is_main:
            print(f'resuming: the run was trained on another CPU ({routes["cpu_model"]}): the product routes '
                  f'are probed afresh here, so the run continues correctly, not bit for bit')

    def restore_rank_rng_states(self, checkpoint):
        """This rank's RNG states. A run resumed with another number of processes continues with
        fresh per-rank dropout streams (training goes on correctly, not bit for bit); so does one
        moved between the CPU and a GPU (trainer/rng.py), which is said once."""
        fallback_seed = rank_seed(self.args.seed, self.group.rank, self.epoch)
        by_rank = checkpoint.get('rng_states_by_rank')
        if by_rank is not None and len(by_rank) == self.group.world_size:
            self.report_rng(restore_rng_states(by_rank[self.group.rank], self.device, fallback_seed))
            return
        self.report_rng(restore_rng_states(checkpoint['rng_states'], self.device, fallback_seed))
        if self.group.world_size != checkpoint.get('world_size', 1):
            if self.is_main:
                print(f'resuming with {self.group.world_size} processes a run saved with '
                      f'{checkpoint.get("world_size", 1)}: same data and batches, new dropout streams')
            if self.group.rank > 0:
                set_seed(rank_seed(self.args.seed, self.group.rank, self.epoch))

    def report_rng(self, note):
        if note and self.is_main:
            print(f'resuming: {note}')

    # ---- the loop ------------------------------------------------------------------------
    def should_stop(self):
        return self.args.early_stopping and self.bad_epochs >= self.args.early_stopping_patience

    def fit(self):
        """Train until num_epochs or early stopping, from wherever `load_state` left the run."""
        own_loggers = self.is_main and self.loggers is None
        loggers = self.open_loggers() if own_loggers else self.loggers
        if loggers is not None:
            loggers.csv.truncate(self.epoch)  # rows of an epoch that was interrupted are redone
        largest = self.sizes[-1]
        try:
            while self.epoch < self.args.num_epochs and not self.should_stop():
                started = time.time()
                train_loss = self.train_epoch(self.epoch)
                train_seconds = time.time() - started  # train_epoch ends on a host sync: device work included
                metrics = self.validate()
                # Rank 0's value decides for everyone, so all ranks stop (or not) together.
                value = self.group.broadcast_value(metrics[largest][self.args.best_metric], self.device)
                self.epoch += 1
                improved = value > self.best_value
                if improved:
                    self.best_value, self.best_epoch, self.bad_epochs = value, self.epoch, 0
                else:
                    self.bad_epochs += 1
                if self.group.enabled:  # a collective: every rank takes part, rank 0 saves
                    self.rng_states_by_rank = self.group.gather_objects(rng_states(self.device))
                if self.is_main:
                    if improved:
                        self.save(BEST_CHECKPOINT)
                    row = {'epoch': self.epoch, 'step': self.global_step, 'train_loss': round(train_loss, 6),
                           'seconds': round(time.time() - started, 2),
                           'train_seconds_per_step': round(train_seconds / self.steps_per_epoch, 5)}
                    row.update({f'val_{name}': round(v, 6) for name, v in metrics[largest].items()})
                    row.update({f'val_{self.args.best_metric}@size{s}': round(metrics[s][self.args.best_metric], 6)
                                for s in self.sizes})
                    loggers.csv.log(row)
                    loggers.log_scalars(self.epoch_scalars(train_loss, metrics), self.global_step)
                    self.save(RECENT_CHECKPOINT)  # last: once it is renamed into place the epoch is done
                    self.saved_epoch = self.epoch
                    tqdm.write(f'epoch {self.epoch}: loss {train_loss:.4f}, val {self.args.best_metric} '
                               f'{value:.4f} (best {self.best_value:.4f} at epoch {self.best_epoch}), '
                               f'{row["seconds"]:.1f}s')
            if self.should_stop() and self.is_main:
                tqdm.write(f'early stopping: no improvement for {self.bad_epochs} epochs')
        finally:
            if own_loggers:
                loggers.close()

    def open_loggers(self):
        """MetricLoggers for this run folder; TensorBoard drops the events a resumed run will write again."""
        return MetricLoggers(self.export_root, self.args, self.config_dict, self.args.use_tensorboard,
                             self.args.use_wandb, resume_step=self.global_step + 1 if self.global_step else None)

    def epoch_scalars(self, train_loss, metrics):
        """What TensorBoard and W&B get each epoch: loss, learning rate, every size's validation metrics."""
        values = {'train/loss': train_loss, 'train/lr': self.scheduler.get_last_lr()[0]}
        values.update({f'val/{name}': value for name, value in metrics[self.sizes[-1]].items()})
        values.update({f'val_{name}/size{size}': value for size in self.sizes for name, value in metrics[size].items()})
        return values
