"""Where metrics go: logs/logs.csv always, TensorBoard by default, Weights & Biases on request.

TensorBoard (RUN/tb) gets per epoch the training loss, the learning rate and every size's validation
metrics (`val_<metric>/size<s>`, one section per metric; `val/<metric>` for the largest size), and
at the end the test metrics with the run's options as hparams (RUN/tb/test). W&B keeps one run per
run folder: its id is saved in RUN/logs/wandb_run_id and reused by every --resume.
"""
import csv
import os
import secrets
from pathlib import Path

from runs.run_folder import LOGS_DIR, log_path, tensorboard_dir
from utils.io import atomic_write_text, write_csv

WANDB_ID_FILE = 'wandb_run_id'  # in RUN/logs/


class LoggerError(RuntimeError):
    """A requested logger (W&B) cannot start; the message says how to fix it or do without."""


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
        self.csv = CSVLog(log_path(export_root))
        self.tensorboard = None
        self.wandb_run = None
        if use_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tensorboard = SummaryWriter(log_dir=str(tensorboard_dir(export_root)), purge_step=resume_step)
            except ImportError:
                print('TensorBoard is not installed; logging to logs/logs.csv only.')
        if use_wandb:
            try:
                self.wandb_run = start_wandb(export_root, config_dict)
            except LoggerError:
                self.close()
                raise

    def log_scalars(self, values, step):
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)

    def log_test(self, by_size, config_dict, step):
        """The test metrics of every size: TensorBoard hparams (RUN/tb/test) and the W&B summary."""
        values = {f'test_{name}/size{size}': value for size, metrics in by_size.items() for name, value in metrics.items()}
        if self.tensorboard is not None:
            self.tensorboard.add_hparams(hparam_values(config_dict), values, run_name='test', global_step=step)
            self.tensorboard.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)
            self.wandb_run.summary.update(values)

    def close(self):
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def hparam_values(config_dict):
    """TensorBoard's hparams take numbers, strings and booleans only."""
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value)
            for key, value in config_dict.items()}


def wandb_run_id(export_root):
    """The W&B run id of this run folder, made on first use: every --resume logs to the same W&B run."""
    path = Path(export_root) / LOGS_DIR / WANDB_ID_FILE
    if path.exists():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    atomic_write_text(path, run_id + '\n')
    return run_id


def start_wandb(export_root, config_dict):
    """wandb.init for this run folder, or LoggerError saying what to do (WANDB_MODE=offline runs
    without an account)."""
    try:
        import wandb
    except ImportError:
        raise LoggerError('--use_wandb: the wandb package is not installed (pip install wandb); or drop '
                          '--use_wandb.') from None
    try:
        return wandb.init(project=os.environ.get('WANDB_PROJECT', 'fmrlrec'), name=Path(export_root).name,
                          dir=str(export_root), config=config_dict, id=wandb_run_id(export_root), resume='allow')
    except Exception as error:  # wandb raises its own types (UsageError, CommError, ...)
        reason = (str(error).strip().splitlines() or [''])[0]
        raise LoggerError(f'--use_wandb: Weights & Biases did not start ({type(error).__name__}: {reason}). Log in '
                          f'with `wandb login` (or set WANDB_API_KEY), or set WANDB_MODE=offline to log into '
                          f'{Path(export_root) / "wandb"} without an account; or drop --use_wandb (a resumed run '
                          f'may drop it).') from None
