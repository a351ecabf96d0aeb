"""From a configuration to tensors and a model: the one place that reads the dataset folder.

It also fingerprints what it loads and compares that with what a run was trained on
(runs/input_fingerprint.py). Loading notices go to standard error: standard output holds a
command's result (recommend.py --json).
"""
import sys
from pathlib import Path

from datasets.cold_start import cold_start_protocol, held_out_items
from datasets.demo import DEMO_CODE, ensure_demo
from datasets.feature_builds import ensure_feature_tables
from datasets.feature_preprocessing import preprocess_features
from datasets.features import FeatureTableError, check_feature_table, feature_cache_path, load_feature_table, modality_name
from datasets.item_text import ALL_FIELDS
from datasets.p5 import DataError, load_p5, metadata_warning, split_examples
from model.fmrlrec import FMRLRec
from runs.input_fingerprint import (RECORD_FORMAT, LoadedInputs, dataset_changes, dataset_fingerprint,
                                    feature_changes, features_fingerprint, inputs_check,
                                    preprocessing_fingerprint)


def print_notice(text):
    """Loading notices go to standard error: standard output is the command's result."""
    print(text, file=sys.stderr)


def dataset_dir(args):
    return Path(args.data_root) / args.dataset_code


def _used_tables(args):
    """(modality, encoder, text fields or None) of each feature table the configuration uses."""
    wanted = [('text', args.use_language_encoder, args.language_encoder, args.text_fields),
              ('image', args.use_img_encoder, args.img_encoder, None)]
    return [(modality, encoder, fields) for modality, used, encoder, fields in wanted if used]


def table_path(args, modality, encoder, fields):
    if args.dataset_code == DEMO_CODE:  # the demo ships its tables in its own folder
        return feature_cache_path(dataset_dir(args), modality, encoder)
    return feature_cache_path(dataset_dir(args), modality, encoder, args.feature_dir, fields or ALL_FIELDS)


def load_raw_features(args, num_items, build=True):
    """{'text': (N+1, d) or None, 'image': ...} as cached. A new or resumed run builds a missing or unfit
    table (datasets/feature_builds.py; the demo ships its own). A trained run's tables (`build` False) are
    only read: eval.py on another dataset must never replace the cache of the one the run was trained on."""
    if build and args.dataset_code != DEMO_CODE:
        return ensure_feature_tables(
            dataset_dir(args), num_items, use_text=args.use_language_encoder, use_image=args.use_img_encoder,
            language_encoder=args.language_encoder, img_encoder=args.img_encoder,
            device=str(getattr(args, 'resolved_device', 'cpu')), missing_image=args.missing_image,
            batch_size=args.feature_batch_size, image_root=args.image_root, feature_dir=args.feature_dir,
            dataset_code=args.dataset_code, text_fields=args.text_fields)
    tables = {'text': None, 'image': None}
    for modality, encoder, fields in _used_tables(args):
        path = table_path(args, modality, encoder, fields)
        problem = None if build else check_feature_table(path, num_items, encoder, fields)
        if problem is not None:
            raise FeatureTableError(f'{problem}. A trained run only reads its feature tables, it never builds or '
                                    f'replaces them: give the --data_root of the data it was trained on, or train '
                                    f'a new run on this dataset.')
        tables[modality] = load_feature_table(path, num_items, encoder, fields)
    return tables


def preprocess_tables(args, tables, num_items, say=print_notice):
    """Each table transformed by --feature_preprocessing on its own (datasets/feature_preprocessing.py)."""
    # The statistics cover every catalogue item, validation and test targets included: that is no
    # leak, because the features are frozen and content-only (no interaction enters them).
    processed = dict(tables)
    for modality, table in tables.items():
        if table is not None and args.feature_preprocessing != 'none':
            processed[modality] = preprocess_features(table, args.feature_preprocessing, f'{modality} features')
            say(f'{modality} features: --feature_preprocessing {args.feature_preprocessing} '
                f'(statistics of all {num_items:,} items)')
    return processed


def load_features(args, num_items, say=print_notice):
    """{'text': (N+1, d) or None, 'image': ...}: built when missing, then preprocessed."""
    return preprocess_tables(args, load_raw_features(args, num_items), num_items, say)


def load_run_inputs(args, say=print_notice, trained_run=False):
    """(SequenceData, feature tables), fingerprinted into `args.resolved_inputs` (a LoadedInputs).

    A resumed run (args.resume) and a trained one (`trained_run`: eval.py, export.py, recommend.py, which
    never build a feature table) are compared with their RUN/inputs.json. The metadata is checked too:
    a broken meta.json.gz stops here (DataError), a missing one is said (`say`) and is no error."""
    if args.dataset_code == DEMO_CODE:
        ensure_demo(dataset_dir(args), seed=0)
    data = load_p5(dataset_dir(args))
    warning = metadata_warning(dataset_dir(args))
    if warning:
        say(warning)
    check = inputs_check(args, trained_run)
    fingerprint = {'format': RECORD_FORMAT, 'dataset': dataset_fingerprint(args, data)}
    if check is not None:
        check.compare(dataset_changes, fingerprint)
    raw_tables = load_raw_features(args, data.num_items, build=not trained_run)
    tables = preprocess_tables(args, raw_tables, data.num_items, say)
    used = [(modality, encoder, fields, table_path(args, modality, encoder, fields).name)
            for modality, encoder, fields in _used_tables(args)]
    fingerprint['features'] = features_fingerprint(used, raw_tables)
    fingerprint['preprocessing'] = preprocessing_fingerprint(args.feature_preprocessing, raw_tables, tables)
    if check is not None:
        check.compare(feature_changes, fingerprint)
    args.resolved_inputs = check.result(fingerprint) if check is not None else LoadedInputs(fingerprint)
    return data, tables


def load_data(args, say=print_notice, trained_run=False):
    """(SequenceData, split tensors, feature tables): load_run_inputs, then the split (with the
    cold-start protocol's items removed from training: datasets/cold_start.py)."""
    data, tables = load_run_inputs(args, say, trained_run)
    held_out = cold_start_items(args, data.num_items)
    if held_out is not None:
        say(f'cold start: {len(held_out):,} of {data.num_items:,} items ({100 * args.cold_start_share:g}%, seed '
            f'{args.cold_start_seed}) held out of training')
    return data, split_examples(data, args.lru_max_len, held_out), tables


def run_cold_start(args, splits):
    """The run's cold-start protocol for the test report (datasets/cold_start.cold_start_protocol), or None."""
    held_out = splits.get('held_out')
    return None if held_out is None else cold_start_protocol(held_out, args.cold_start_share, args.cold_start_seed)


def cold_start_items(args, num_items):
    """(K,) item ids the run holds out of training (--cold_start), or None."""
    if not getattr(args, 'cold_start', False):
        return None
    return checked_held_out_items(num_items, args.cold_start_share, args.cold_start_seed)


def checked_held_out_items(num_items, share, seed):
    """datasets/cold_start.held_out_items, with a share that leaves nothing to train on as a DataError."""
    try:
        return held_out_items(num_items, share, seed)
    except ValueError as error:
        raise DataError(f'{error} of the dataset, leaving nothing to train on: choose a smaller '
                        f'--cold_start_share (the default is 0.05)') from None


def accepted_input_changes(args):
    """What differed from the run's inputs and was let through: the metrics files repeat it."""
    loaded = getattr(args, 'resolved_inputs', None)
    return loaded.accepted_changes if loaded is not None else []


def build_model(args, num_items, features):
    model = FMRLRec(
        num_items, args.mrl_hidden_sizes, text_features=features.get('text'),
        image_features=features.get('image'), num_blocks=args.lru_num_blocks,
        dropout=args.lru_dropout, attn_dropout=args.lru_attn_dropout, r_min=args.lru_r_min,
        r_max=args.lru_r_max, bias=args.lru_use_bias, item_id_embedding=args.item_id_embedding,
        id_dropout=args.id_dropout, content_loss_weight=args.content_loss_weight)
    held_out = cold_start_items(args, num_items)
    if held_out is not None:
        model.exclude_from_training(held_out)
    return model


def run_modality_name(args):
    return modality_name(args.use_language_encoder, args.use_img_encoder)
