"""A Trainer restored from its run's recent checkpoint (train.py --resume; docs/resume.md)."""
from runs.run_config import config_differences
from runs.run_folder import CheckpointError, torch_load
from trainer.trainer import RESUME_KEYS


def load_resume_state(trainer, path, current_config):
    """Restore `trainer` from the recent checkpoint at `path`, or say exactly what is wrong with it."""
    what_to_do = ('Checkpoints are written atomically, so this is damage from outside training (disk, '
                  'copy, another program). Restore the file, or delete it to restart the run from its '
                  'first epoch with the same command.')
    try:
        # To the CPU: load_state_dict then copies the weights and the AdamW state to the parameters'
        # devices, and the RNG states must be CPU tensors (whatever device saved them).
        checkpoint = torch_load(path, 'cpu')
    except Exception as error:  # truncated, foreign or unreadable file
        raise CheckpointError(f'cannot resume: {path} is corrupt or not a checkpoint '
                              f'({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}). '
                              f'{what_to_do}') from None
    missing = [key for key in RESUME_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise CheckpointError(f'cannot resume: {path} lacks {", ".join(missing)}; it is not a recent '
                              f'checkpoint of this project. {what_to_do}')
    differing = config_differences(checkpoint.get('config') or {}, current_config)
    if differing:
        raise CheckpointError(f'cannot resume: {path} was trained with another configuration '
                              f'({", ".join(differing[:6])}). Resume with the options it was trained with, '
                              f'or start a new run in another --export_root.')
    try:
        trainer.load_state(checkpoint)
    except (KeyError, RuntimeError, TypeError, ValueError) as error:
        raise CheckpointError(f'cannot resume: {path} does not fit this model '
                              f'({str(error).splitlines()[0]}). {what_to_do}') from None
