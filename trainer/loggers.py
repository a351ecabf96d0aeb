"""Where metrics go: logs/logs.csv always, TensorBoard by default, Weights & Biases on request."""
import csv
import os
from pathlib import Path

from utils.io import write_csv


class CSVLog:
    """One row per epoch in <run>/logs/logs.csv, rewritten atomically each time."""

    def __init__(self, path):
        self.path = Path(path)
        self.rows = []
        if self.path.exists():  # a resumed run continues its log
            with open(self.path, newline='') as handle:
                self.rows = list(csv.DictReader(handle))

    def truncate(self, epochs_done):
        """Keep the rows of the epochs a resumed run has completed; later ones will be redone.
        (A row is written before the recent checkpoint, so a kill between the two leaves one
        row too many, never one too few.)"""
        self.rows = [r for r in self.rows if int(r['epoch']) <= epochs_done]

    def log(self, row):
        self.rows.append({k: v for k, v in row.items()})
        write_csv(self.path, self.rows)


class MetricLoggers:
    def __init__(self, export_root, args, config_dict, use_tensorboard=True, use_wandb=False, resume_step=None):
        """resume_step: the first global step a resumed run will log; TensorBoard drops the events
        from it on, which the interrupted run wrote and this one will write again."""
        self.csv = CSVLog(Path(export_root) / 'logs' / 'logs.csv')
        self.tensorboard = None
        self.wandb_run = None
        if use_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tensorboard = SummaryWriter(log_dir=str(Path(export_root) / 'tb'), purge_step=resume_step)
            except ImportError:
                print('TensorBoard is not installed; logging to logs/logs.csv only.')
        if use_wandb:
            import wandb  # WANDB_MODE=offline runs without an account
            self.wandb_run = wandb.init(project=os.environ.get('WANDB_PROJECT', 'fmrlrec'),
                                        name=Path(export_root).name, dir=str(export_root),
                                        config=config_dict, resume='allow')

    def log_scalars(self, values, step):
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)

    def close(self):
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
