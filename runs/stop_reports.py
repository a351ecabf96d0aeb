"""The one-line reports of a run that stops early: what happened, what on disk is intact, what to do.

`RunProgress` is what train.py knows at the moment it stops (the run folder, whether it was written,
the trainer and its phase); every report is built from it alone.
"""
from dataclasses import dataclass

from runs.run_folder import RECENT_CHECKPOINT, models_dir, recent_checkpoint_path


@dataclass
class RunProgress:
    root: str = None          # --export_root, once the configuration is known
    folder_written: bool = False  # args.yaml is there: `--resume RUN` continues (or restarts) the run
    trainer: object = None
    phase: str = 'setup'      # setup, train or test


def _kept(progress):
    """What on disk a resumed run continues from."""
    trainer, root = progress.trainer, progress.root
    if trainer is None or not trainer.saved_epoch:
        return f'{root} holds no checkpoint yet, so resuming starts at epoch 1'
    return f'{recent_checkpoint_path(root)} holds epoch {trainer.saved_epoch}, intact'


def _resume(progress):
    return f'python train.py --resume {progress.root}'


def interrupted_report(progress):
    """Ctrl-C (SIGINT): where the run stands and the command that continues it."""
    if not progress.folder_written:
        return 'interrupted (Ctrl-C) before the run folder was written; nothing was saved. Run the same command again.'
    if progress.phase == 'test':
        return (f'interrupted (Ctrl-C) while testing; training is complete ({_kept(progress)}). '
                f'`{_resume(progress)}` tests the best checkpoint again.')
    return (f'interrupted (Ctrl-C); {_kept(progress)}, and only the unfinished epoch is lost. Continue with '
            f'`{_resume(progress)}`: it repeats that epoch exactly.')


def disk_full_report(error, progress):
    """A write that ran out of space (utils.io.DiskFullError): the file it replaced is intact."""
    what = error.strerror or str(error)
    if not progress.folder_written:
        return f'error: {what}. Nothing of the run was written; free some space and run the same command again.'
    return (f'error: {what}. The file being replaced and everything written before are intact ({_kept(progress)}). '
            f'Free some space, then continue with `{_resume(progress)}`.')


def non_finite_report(error, trainer, root):
    """A NaN or infinite training loss (or validation scores): nothing was saved after it."""
    models = models_dir(root)
    if trainer is not None and trainer.epoch:
        kept = (f'Nothing was saved after epoch {trainer.epoch}: {models / RECENT_CHECKPOINT} holds epoch '
                f'{trainer.epoch}, and best_acc_model.pth epoch {trainer.best_epoch} (test it with '
                f'`python eval.py --export_root {root}`).')
    else:
        kept = 'No epoch had completed, so there is no checkpoint.'
    return (f'Stopped: {error}. {kept} Resuming would replay the same steps; start a new run with a lower '
            f'--lr, a longer --warmup_steps or a smaller --max_grad_norm, and check the feature tables.')
