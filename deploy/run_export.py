"""Exports of a run folder: the size-s model of a trained run, as its export file would hold it."""
from datasets.features import FeatureTableError
from datasets.p5 import DataError
from deploy.catalogue import read_catalogue
from deploy.export_format import build_export, model_from_export
from model.slicing import SizeError, size_position
from runs.run_folder import CheckpointError, best_checkpoint_path, read_run_config, read_test_metrics
from runs.run_inputs import run_modality_name
from runs.trained_run import load_trained_run

# What loading a run for export can raise with a message meant for the user.
RUN_ERRORS = (CheckpointError, SizeError, DataError, FeatureTableError)


def export_run(export_root, size, data_root=None, keep_features=False, loaded=None, accept_changed_inputs=False):
    """build_export for a run folder; `loaded` = load_trained_run's result, to reuse it across sizes."""
    args, data, model = (loaded if loaded is not None
                         else load_trained_run(export_root, data_root, accept_changed_inputs))
    catalogue = read_catalogue(data.data_dir, data.id2item, data.num_items)
    return build_export(model, size, catalogue, args.lru_max_len, keep_features, run_source(export_root, args),
                        run_metrics(export_root, size))


def run_metrics(export_root, size):
    """The run's test metrics at `size` (empty when the run was not tested)."""
    return (read_test_metrics(export_root) or {}).get(str(size), {})


def run_source(export_root, args):
    """Where an export comes from, stored in the file for the record."""
    return {'run': str(export_root), 'dataset_code': args.dataset_code, 'features': run_modality_name(args),
            'text_encoder': args.language_encoder if args.use_language_encoder else '',
            'image_encoder': args.img_encoder if args.use_img_encoder else ''}


def check_run_size(export_root, size):
    """SizeError unless `size` is one of the run's sizes, read from args.yaml (no model loading)."""
    size_position(read_run_config(export_root)['mrl_hidden_sizes'], size)


def load_run_size(export_root, size, data_root=None, device='cpu', accept_changed_inputs=False):
    """The size-`size` model of a run, exactly as its export file would load."""
    check_run_size(export_root, size)
    bundle = export_run(export_root, size, data_root, accept_changed_inputs=accept_changed_inputs)
    return model_from_export(bundle, device, source=best_checkpoint_path(export_root))
