"""The feature tables a run needs: use each cache when it is sound, build it when it is not.

datasets/features.py is the table file format (names, sidecars, checks, loading); the builders are
datasets/text_features.py and datasets/image_features.py, which also run alone from the command line.
"""
import os

from datasets import image_features, text_features
from datasets.encoders import WHAT_TO_DO, EncoderError, unavailable_reason
from datasets.features import FeatureTableError, check_feature_table, feature_cache_path, load_feature_table
from datasets.item_text import ALL_FIELDS, parse_text_fields


def _require_writable(folder, modality):
    """Fail before encoding anything when the cache cannot be written (e.g. a read-only data copy)."""
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK):
        raise FeatureTableError(f'the {modality} feature cache must be built, but {folder} is not writable '
                                f'({existing} is read-only). Pass --feature_dir to cache the tables elsewhere.')


def ensure_feature_tables(data_dir, num_items, *, use_text, use_image, language_encoder, img_encoder,
                          device='cpu', missing_image='zero', batch_size=64, image_root=None,
                          feature_dir=None, dataset_code=None, text_fields=ALL_FIELDS):
    """{'text': (N+1, d) tensor or None, 'image': ...} for the enabled modalities; the text table is
    built from `text_fields` ('all', or e.g. 'title').

    A cache that is missing, unreadable, of the wrong row count, or built by another encoder or from
    other text fields is reported and rebuilt with datasets/text_features.py or
    datasets/image_features.py, never used as it is; the fresh table is then checked and loaded like
    any other. So is a text table whose rows are nearly all the same (one built without item metadata
    before the builder refused such tables). When the encoder cannot be loaded here (offline, no such
    folder), or the table would not tell items apart (datasets/text_features.py), FeatureTableError
    says so and the file on disk is left as it is."""
    tables = {'text': None, 'image': None}
    text_fields = parse_text_fields(text_fields)
    wanted = [('text', use_text, language_encoder, text_fields), ('image', use_image, img_encoder, None)]
    for modality, enabled, encoder, fields in wanted:
        if not enabled:
            continue
        path = feature_cache_path(data_dir, modality, encoder, feature_dir, fields or ALL_FIELDS)
        problem = check_feature_table(path, num_items, encoder, fields)
        if problem is None and modality == 'text':
            problem = text_features.same_row_problem(path)
        if problem is not None:
            unavailable = unavailable_reason(encoder)
            if unavailable:
                raise FeatureTableError(f'{problem}, and the {modality} features cannot be built here: '
                                        f'{unavailable}. {WHAT_TO_DO[modality]}.')
            _require_writable(path.parent, modality)
            print(f'warning: {modality} features: {problem}; building them with {encoder} on {device} '
                  f'(a file there is replaced only by a complete new table)')
            try:
                _build(modality, data_dir, encoder, path, num_items, device, batch_size, fields, image_root,
                       dataset_code, missing_image)
            except (EncoderError, text_features.DegenerateTableError) as error:
                raise FeatureTableError(f'{problem}, and {error}') from None
        else:
            print(f'{modality} features: using the cache {path}')
        tables[modality] = load_feature_table(path, num_items, encoder, fields)
    return tables


def _build(modality, data_dir, encoder, path, num_items, device, batch_size, fields, image_root, dataset_code,
           missing_image):
    """Build one table with its builder (which imports the encoder libraries only when it runs)."""
    if modality == 'text':
        text_features.build_text_features(data_dir, encoder, num_items=num_items, device=device, batch_size=batch_size,
                            out_path=path, text_fields=fields)
    else:
        try:
            image_features.build_image_features(data_dir, encoder, image_root=image_root or 'photos', dataset_code=dataset_code,
                                 num_items=num_items, device=device, batch_size=batch_size,
                                 missing_image=missing_image, out_path=path)
        except (image_features.MissingImagesError, FileNotFoundError) as error:  # photos or item2img_dict.pkl: said, no traceback
            raise FeatureTableError(str(error)) from None
