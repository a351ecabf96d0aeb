"""From a configuration to tensors and a model: the one place that reads the dataset folder."""
from pathlib import Path

from datasets.demo import DEMO_CODE, ensure_demo
from datasets.feature_preprocessing import preprocess_features
from datasets.feature_builds import ensure_feature_tables
from datasets.features import feature_cache_path, load_feature_table, modality_name
from datasets.p5 import load_p5, metadata_warning, split_examples
from model.fmrlrec import FMRLRec


def dataset_dir(args):
    return Path(args.data_root) / args.dataset_code


def load_features(args, num_items):
    """{'text': (N+1, d) or None, 'image': ...}: built when missing (datasets/feature_builds.py), then each
    table transformed by --feature_preprocessing on its own (datasets/feature_preprocessing.py)."""
    data_dir = dataset_dir(args)
    if args.dataset_code == DEMO_CODE:  # the demo ships its tables in its own folder
        def demo_table(modality, encoder, used):
            return load_feature_table(feature_cache_path(data_dir, modality, encoder), num_items, encoder) if used else None
        tables = {'text': demo_table('text', args.language_encoder, args.use_language_encoder),
                  'image': demo_table('image', args.img_encoder, args.use_img_encoder)}
    else:
        tables = ensure_feature_tables(
            data_dir, num_items, use_text=args.use_language_encoder, use_image=args.use_img_encoder,
            language_encoder=args.language_encoder, img_encoder=args.img_encoder,
            device=str(getattr(args, 'resolved_device', 'cpu')), missing_image=args.missing_image,
            batch_size=args.feature_batch_size, image_root=args.image_root, feature_dir=args.feature_dir,
            dataset_code=args.dataset_code, text_fields=args.text_fields)
    # The statistics cover every catalogue item, validation and test targets included: that is no
    # leak, because the features are frozen and content-only (no interaction enters them).
    for modality, table in tables.items():
        if table is not None and args.feature_preprocessing != 'none':
            tables[modality] = preprocess_features(table, args.feature_preprocessing, f'{modality} features')
            print(f'{modality} features: --feature_preprocessing {args.feature_preprocessing} '
                  f'(statistics of all {num_items:,} items)')
    return tables


def load_data(args, say=print):
    """(SequenceData, split tensors, feature tables). The metadata is checked too: a broken
    meta.json.gz stops here (DataError), a missing one is said (`say`) and is no error."""
    if args.dataset_code == DEMO_CODE:
        ensure_demo(dataset_dir(args), seed=0)
    data = load_p5(dataset_dir(args))
    warning = metadata_warning(dataset_dir(args))
    if warning:
        say(warning)
    return data, split_examples(data, args.lru_max_len), load_features(args, data.num_items)


def build_model(args, num_items, features):
    return FMRLRec(
        num_items, args.mrl_hidden_sizes, text_features=features.get('text'),
        image_features=features.get('image'), num_blocks=args.lru_num_blocks,
        dropout=args.lru_dropout, attn_dropout=args.lru_attn_dropout, r_min=args.lru_r_min,
        r_max=args.lru_r_max, bias=args.lru_use_bias, item_id_embedding=args.item_id_embedding)


def run_modality_name(args):
    return modality_name(args.use_language_encoder, args.use_img_encoder)
