"""A trained run loaded back from its run folder: the full model with the best weights (eval.py,
export.py), or a Trainer restored from the recent checkpoint (train.py --resume)."""
from runs.run_config import config_differences, saved_run_args
from runs.run_folder import CheckpointError, load_best_weights, torch_load
from runs.run_inputs import build_model, load_run_inputs
from trainer.trainer import RESUME_KEYS


def load_trained_run(export_root, data_root=None, accept_changed_inputs=False):
    """(run configuration, SequenceData, full model with the best checkpoint's weights, eval mode).

    The dataset and feature tables must be those the run was trained on (RUN/inputs.json), unless
    `accept_changed_inputs`; notices go to standard error, and no feature table is built."""
    args = saved_run_args(export_root, {'data_root': data_root, 'accept_changed_inputs': accept_changed_inputs or None})
    data, features = load_run_inputs(args, trained_run=True)
    model = build_model(args, data.num_items, features)
    load_best_weights(model, export_root, 'cpu')
    return args, data, model.eval()


def load_resume_state(trainer, path, current_config):
    """Restore `trainer` from the recent checkpoint at `path`, or say exactly what is wrong with it."""
    what_to_do = (f'Checkpoints are written atomically, so this is damage from outside training (disk, '
                  f'copy, another program). Restore the file, or delete it to restart the run from its '
                  f'first epoch with the same command.')
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
