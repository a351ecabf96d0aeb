"""The training loop: one loss over all nested sizes, validation each epoch, early stopping on the
largest size, best and recent checkpoints, logs."""
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.packing import pack_batch
from trainer.evaluate import evaluate
from trainer.loggers import MetricLoggers
from trainer.optim import build_optimizer, cosine_with_warmup
from utils.io import atomic_torch_save
from utils.runtime import autocast

BEST_CHECKPOINT = 'best_acc_model.pth'
RECENT_CHECKPOINT = 'checkpoint-recent.pth'
STATE_DICT_KEY = 'model_state_dict'
OPTIMIZER_STATE_DICT_KEY = 'optimizer_state_dict'


def rng_states():
    states = {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states):
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


class Trainer:
    def __init__(self, args, model, splits, export_root, device, config_dict):
        self.args = args
        self.model = model
        self.device = torch.device(device)
        self.export_root = Path(export_root)
        self.models_dir = self.export_root / 'models'
        self.sizes = list(args.mrl_hidden_sizes)
        self.tokens, self.labels = splits['train']
        self.val_examples = splits['val']
        self.steps_per_epoch = (len(self.tokens) + args.train_batch_size - 1) // args.train_batch_size
        self.optimizer = build_optimizer(model, args)
        self.scheduler = cosine_with_warmup(self.optimizer, args.warmup_steps,
                                            args.num_epochs * self.steps_per_epoch, args.enable_lr_schedule)
        self.config_dict = config_dict
        self.epoch = 0            # epochs completed
        self.global_step = 0
        self.best_value = -float('inf')
        self.best_epoch = -1
        self.bad_epochs = 0
        self.train_module = model  # what the step calls (a compiled or DDP-wrapped model)
        self.is_main = True

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
    def train_step(self, packed, targets):
        with autocast(self.device, self.args.amp):
            loss, per_size = self.train_module(packed, targets, self.args.mrl_loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.args.max_grad_norm and self.args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1
        return loss.detach(), per_size

    def train_epoch(self, epoch):
        self.model.train()
        order = self.epoch_order(epoch)
        size = self.args.train_batch_size
        running = torch.zeros((), device=self.device)
        bar = tqdm(range(self.steps_per_epoch), desc=f'epoch {epoch + 1}', leave=False,
                   disable=not self.is_main)
        for step in bar:
            loss, _ = self.train_step(*self.batch(order[step * size:(step + 1) * size]))
            running += loss
            if (step + 1) % 25 == 0 or step + 1 == self.steps_per_epoch:  # one sync every 25 steps
                bar.set_postfix(loss=f'{running.item() / (step + 1):.4f}',
                                lr=f'{self.scheduler.get_last_lr()[0]:.2e}')
        return running.item() / max(1, self.steps_per_epoch)

    # ---- validation and checkpoints ------------------------------------------------------
    def validate(self):
        return evaluate(self.model, self.val_examples, self.sizes, self.args.metric_ks,
                        self.args.val_batch_size, self.device, self.args.mask_history, self.args.amp,
                        progress=self.is_main, description='validate')

    def state(self):
        return {
            STATE_DICT_KEY: self.model.state_dict(),
            OPTIMIZER_STATE_DICT_KEY: self.optimizer.state_dict(),
            'scheduler_state_dict': self.scheduler.state_dict(),
            'epoch': self.epoch, 'global_step': self.global_step,
            'best_value': self.best_value, 'best_epoch': self.best_epoch, 'bad_epochs': self.bad_epochs,
            'rng_states': rng_states(), 'config': self.config_dict,
        }

    def save(self, name):
        atomic_torch_save(self.state(), self.models_dir / name)

    def load_state(self, checkpoint):
        self.model.load_state_dict(checkpoint[STATE_DICT_KEY])
        self.optimizer.load_state_dict(checkpoint[OPTIMIZER_STATE_DICT_KEY])
        self.scheduler.load_state_dict(checkpoint['scheduler_state_dict'])
        self.epoch, self.global_step = checkpoint['epoch'], checkpoint['global_step']
        self.best_value, self.best_epoch = checkpoint['best_value'], checkpoint['best_epoch']
        self.bad_epochs = checkpoint['bad_epochs']
        restore_rng_states(checkpoint['rng_states'])

    # ---- the loop ------------------------------------------------------------------------
    def fit(self):
        loggers = MetricLoggers(self.export_root, self.args, self.config_dict, self.args.use_tensorboard,
                                self.args.use_wandb) if self.is_main else None
        if loggers is not None:
            loggers.csv.truncate(self.epoch)
        largest = self.sizes[-1]
        try:
            while self.epoch < self.args.num_epochs:
                started = time.time()
                train_loss = self.train_epoch(self.epoch)
                metrics = self.validate()
                value = metrics[largest][self.args.best_metric]
                self.epoch += 1
                improved = value > self.best_value
                if improved:
                    self.best_value, self.best_epoch, self.bad_epochs = value, self.epoch, 0
                else:
                    self.bad_epochs += 1
                if self.is_main:
                    if improved:
                        self.save(BEST_CHECKPOINT)
                    self.save(RECENT_CHECKPOINT)
                    row = {'epoch': self.epoch, 'step': self.global_step, 'train_loss': round(train_loss, 6),
                           'seconds': round(time.time() - started, 2)}
                    row.update({f'val_{name}': round(v, 6) for name, v in metrics[largest].items()})
                    row.update({f'val_{self.args.best_metric}@size{s}': round(metrics[s][self.args.best_metric], 6)
                                for s in self.sizes})
                    loggers.csv.log(row)
                    loggers.log_scalars({'train/loss': train_loss, **{f'val/{k}': v for k, v in metrics[largest].items()}},
                                        self.global_step)
                    tqdm.write(f'epoch {self.epoch}: loss {train_loss:.4f}, val {self.args.best_metric} '
                               f'{value:.4f} (best {self.best_value:.4f} at epoch {self.best_epoch}), '
                               f'{row["seconds"]:.1f}s')
                if self.args.early_stopping and self.bad_epochs >= self.args.early_stopping_patience:
                    if self.is_main:
                        tqdm.write(f'early stopping: no improvement for {self.bad_epochs} epochs')
                    break
        finally:
            if loggers is not None:
                loggers.close()
