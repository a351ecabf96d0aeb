"""A trained run loaded back from its run folder: the full model with the best weights (eval.py,
export.py). A Trainer restored from the recent checkpoint (train.py --resume) is trainer/resume.py."""
from runs.run_config import saved_run_args
from runs.run_folder import load_best_weights
from runs.run_inputs import build_model, load_run_inputs


def load_trained_run(export_root, data_root=None, accept_changed_inputs=False):
    """(run configuration, SequenceData, full model with the best checkpoint's weights, eval mode).

    The dataset and feature tables must be those the run was trained on (RUN/inputs.json), unless
    `accept_changed_inputs`; notices go to standard error, and no feature table is built."""
    args = saved_run_args(export_root, {'data_root': data_root, 'accept_changed_inputs': accept_changed_inputs or None})
    data, features = load_run_inputs(args, trained_run=True)
    model = build_model(args, data.num_items, features)
    load_best_weights(model, export_root, 'cpu')
    return args, data, model.eval()
