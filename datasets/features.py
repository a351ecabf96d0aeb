"""Frozen item feature tables: where they are cached, how they are checked and loaded.

A table for N items is cached as `<data_dir>/features/<modality>_<encoder slug>.npy` of shape (N, d),
row i-1 holding item id i, with a sidecar `<same name>.json` that records the encoder, the item
count and the dimension. A text table built from some fields only (--text_fields) is named
`text_<encoder slug>__<field>+<field>.npy` and its sidecar records `text_fields`. Loading prepends a
zero padding row, so item id i is row i.

`table_sha256` is the content hash a run records of each table it was trained on (runs/input_fingerprint.py,
docs/content_features.md, "Which tables a run was trained on").
"""
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import torch

from datasets.item_text import ALL_FIELDS, parse_text_fields
from utils.io import atomic_write_bytes, atomic_write_text

MODALITIES = ('text', 'image')


def modality_name(use_text, use_image):
    """What a model sees, as runs, logs and tables name it: 'text+image', 'text', 'image' or 'id'."""
    used = [name for name, on in zip(MODALITIES, (use_text, use_image)) if on]
    return '+'.join(used) if used else 'id'


class FeatureTableError(ValueError):
    """A cached feature table is missing, of the wrong shape, or was built by another encoder."""


def encoder_slug(encoder):
    """A file-name-safe name for an encoder id (`BAAI/bge-large-en-v1.5` -> `BAAI__bge-large-en-v1.5`)."""
    name = str(encoder).rstrip('/\\')
    if Path(name).is_absolute() or name.startswith('.'):
        # Local folders: the last two components, since packages often ship a folder called `model`.
        name = '__'.join(Path(name).parts[-2:])
    return re.sub(r'[^A-Za-z0-9._-]+', '_', name.replace('/', '__'))


def feature_cache_path(data_dir, modality, encoder, feature_dir=None, text_fields=ALL_FIELDS):
    """`<feature_dir>/<modality>_<slug>.npy`, or `text_<slug>__title+brand.npy` for a text table of
    some fields only; feature_dir defaults to `<data_dir>/features`."""
    if modality not in MODALITIES:
        raise ValueError(f'modality must be one of {MODALITIES}, got {modality!r}')
    text_fields = parse_text_fields(text_fields)
    if modality != 'text' and text_fields != ALL_FIELDS:
        raise ValueError(f'--text_fields {text_fields} only applies to text features, not {modality}')
    folder = Path(feature_dir) if feature_dir else Path(data_dir) / 'features'
    # 'all' keeps the old name, so caches built before --text_fields existed stay valid.
    suffix = '' if text_fields == ALL_FIELDS else '__' + text_fields.replace(',', '+')
    return folder / f'{modality}_{encoder_slug(encoder)}{suffix}.npy'


def add_build_options(parser):
    """The options every feature-building command shares (datasets.text_features, .image_features)."""
    parser.add_argument('--device', default='cpu', help='cpu, cuda, cuda:1, mps ...')
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--out', default=None, help='write the .npy here instead of <data_dir>/features/')
    parser.add_argument('--feature_dir', default=None,
                        help="cache folder, as train.py's --feature_dir (file named after the encoder)")
    parser.add_argument('--no_progress', action='store_true', help='no progress bar')
    return parser


def build_output_path(args, modality, encoder, text_fields=ALL_FIELDS):
    """--out, else the cache file in --feature_dir, else None (the builder's default place)."""
    if args.out:
        return args.out
    if not args.feature_dir:
        return None
    return feature_cache_path(args.data_dir, modality, encoder, args.feature_dir, text_fields)


def save_feature_table(path, table, encoder, text_fields=None):
    """Write an (N, d) float32 table and its sidecar atomically (temporary file, fsync, rename).
    `text_fields` (text tables) is recorded in the sidecar; None records nothing, which means 'all'."""
    path = Path(path)
    table = np.ascontiguousarray(table, dtype=np.float32)
    if table.ndim != 2:
        raise FeatureTableError(f'a feature table must be 2-D (items x dim), got shape {table.shape}')
    buffer = io.BytesIO()
    np.save(buffer, table)
    atomic_write_bytes(path, buffer.getvalue())
    meta = {'encoder': str(encoder), 'num_items': int(table.shape[0]), 'dim': int(table.shape[1])}
    if text_fields is not None:
        meta['text_fields'] = parse_text_fields(text_fields)
    atomic_write_text(path.with_suffix('.json'), json.dumps(meta, indent=2))


def read_feature_meta(path):
    """The sidecar JSON of a table, None when absent; a FeatureTableError when unreadable."""
    sidecar = Path(path).with_suffix('.json')
    if not sidecar.exists():
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FeatureTableError(f'{sidecar} is not valid JSON ({error}).') from None
    if not isinstance(meta, dict):
        raise FeatureTableError(f'{sidecar} is not a feature-table description.')
    return meta


def check_feature_table(path, num_items, encoder=None, text_fields=None):
    """Return None when the cache at `path` is usable for `num_items` items (and `encoder`, and the
    text of `text_fields`), else a sentence saying why not."""
    path = Path(path)
    if not path.exists():
        return f'{path} does not exist'
    try:
        meta = read_feature_meta(path)
    except FeatureTableError:
        return f'{path.with_suffix(".json")}, the description of {path.name}, is not valid JSON'
    if encoder is not None and meta is not None and meta.get('encoder') != str(encoder):
        return f'{path} was built by encoder {meta.get("encoder")!r}, not {str(encoder)!r}'
    if text_fields is not None and meta is not None:
        # Sidecars written before --text_fields existed have no entry: those tables used every field.
        built_from = meta.get('text_fields', ALL_FIELDS)
        if built_from != parse_text_fields(text_fields):
            return f'{path} was built from the text fields {built_from!r}, not {parse_text_fields(text_fields)!r}'
    try:
        table = np.load(path, mmap_mode='r')
    except Exception as error:  # a truncated or foreign file
        return f'{path} cannot be read as a .npy array ({error})'
    if table.ndim != 2 or table.shape[0] != num_items or table.shape[1] < 1:
        return (f'{path} has shape {tuple(table.shape)} but the dataset has {num_items} items '
                f'(expected ({num_items}, d) with d >= 1)')
    if not np.issubdtype(table.dtype, np.number) or np.issubdtype(table.dtype, np.complexfloating):
        return f'{path} holds {table.dtype} values, not real numbers'
    if meta is not None and meta.get('dim') not in (None, table.shape[1]):
        return f'{path} has {table.shape[1]} columns but its sidecar says dim {meta.get("dim")}'
    return None


def table_sha256(table):
    """sha256 of a loaded (N + 1, d) table's item rows as float32, shape included: one pass over the
    table (well under a second for Beauty's 12,101 x 1024), done once when a run loads its inputs."""
    rows = np.ascontiguousarray((table.numpy() if torch.is_tensor(table) else np.asarray(table))[1:], dtype=np.float32)
    digest = hashlib.sha256(f'float32 {rows.shape[0]}x{rows.shape[1]}\n'.encode())
    digest.update(rows.data)
    return digest.hexdigest()


def load_feature_table(path, num_items, encoder=None, text_fields=None):
    """Load a cached (N, d) table as a float32 tensor of shape (N + 1, d) with a zero row 0."""
    problem = check_feature_table(path, num_items, encoder, text_fields)
    if problem is not None:
        raise FeatureTableError(
            f'{problem}. Rebuild the features (delete the file and rerun train.py, or run the '
            f'feature builder of datasets/) for this dataset.')
    table = np.asarray(np.load(path), dtype=np.float32)
    if not np.isfinite(table).all():
        bad = np.unique(np.nonzero(~np.isfinite(table))[0])
        raise FeatureTableError(
            f'{path} holds NaN or infinite values in {len(bad)} rows (item ids '
            f'{", ".join(str(i + 1) for i in bad[:5])}{"..." if len(bad) > 5 else ""}). Rebuild the features '
            f'(delete the file and rerun train.py), and check the encoder run that wrote them.')
    padded = np.zeros((num_items + 1, table.shape[1]), dtype=np.float32)
    padded[1:] = table
    return torch.from_numpy(padded)
