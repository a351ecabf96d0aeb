"""Frozen text features (docs/method.md, Item features): the item text of every item, encoded by a sentence-transformers model.

    python -m datasets.text_features --data_dir data/beauty [--language_encoder BAAI/bge-large-en-v1.5]

writes `<data_dir>/features/text_<encoder>.npy` (N x d, row i-1 = item id i, L2-normalised) and its
sidecar (see datasets/features.py). `--language_encoder` is a model id or a local folder that
`SentenceTransformer(...)` loads; `--out` writes the table elsewhere (for read-only data folders).
`--text_fields title` (or e.g. `title,brand`) encodes those fields only, into
`text_<encoder>__title.npy`, so it never replaces the table of all fields.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

from datasets.encoders import DEFAULT_LANGUAGE_ENCODER, EncoderError, load_failure
from datasets.features import add_build_options, build_output_path, feature_cache_path, save_feature_table
from datasets.item_text import ALL_FIELDS, chosen_fields, item_fields, item_text, parse_text_fields


def dataset_item_ids(data_dir, num_items=None):
    """ASINs of item ids 1..N (index 0 = item 1), checked against `num_items` when given."""
    from datasets.p5 import read_datamaps
    id2item = read_datamaps(Path(data_dir) / 'datamaps.json')
    count = len(id2item)
    if sorted(id2item) != list(range(1, count + 1)):
        raise ValueError(f'{data_dir}/datamaps.json: item ids are not 1..{count} without gaps')
    if num_items is not None and num_items != count:
        raise ValueError(f'{data_dir}/datamaps.json has {count} items but the dataset has {num_items}; '
                         f'the id maps and the sequences do not belong together')
    return [id2item[i] for i in range(1, count + 1)]


def dataset_item_texts(data_dir, num_items=None, text_fields=ALL_FIELDS):
    """(texts of the chosen fields in item-id order, how many items have each chosen field and how
    many have metadata at all)."""
    text_fields = parse_text_fields(text_fields)
    from datasets.p5 import read_meta
    asins = dataset_item_ids(data_dir, num_items)
    meta_path = Path(data_dir) / 'meta.json.gz'
    meta = read_meta(meta_path) if meta_path.exists() else {}
    if not meta:
        print(f'warning: no metadata in {meta_path}; every item is "Untitled Item"')
    counts = {label: 0 for _, label in chosen_fields(text_fields)}
    counts['with metadata'] = counts['untitled'] = 0
    texts = []
    for asin in asins:
        record = meta.get(asin)
        counts['with metadata'] += record is not None
        fields = item_fields(record, text_fields)
        for label, _ in fields:
            counts[label] += 1
        counts['untitled'] += not fields
        texts.append(item_text(record, text_fields))
    return texts, counts


def encode_texts(texts, encoder, *, device='cpu', batch_size=64, progress=True):
    """(len(texts), d) float32 array of L2-normalised sentence embeddings.

    sentence-transformers batches the texts itself (sorted by length, so little padding)."""
    from sentence_transformers import SentenceTransformer  # slow import: only when encoding
    try:
        model = SentenceTransformer(str(encoder), device=device)
    except (OSError, ValueError) as error:  # no network, no such model or folder: one line, not 80
        raise load_failure('text', encoder, error) from None
    embeddings = model.encode(list(texts), batch_size=batch_size, show_progress_bar=progress,
                              convert_to_numpy=True, normalize_embeddings=True)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    # normalize again in float32 so that every row has norm 1 up to float32 rounding
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def build_text_features(data_dir, encoder=DEFAULT_LANGUAGE_ENCODER, *, num_items=None, device='cpu',
                        batch_size=64, out_path=None, progress=True, text_fields=ALL_FIELDS):
    """Encode the item texts (of `text_fields`) of a P5 folder and cache them; returns (path, info dict)."""
    started = time.perf_counter()
    text_fields = parse_text_fields(text_fields)
    texts, counts = dataset_item_texts(data_dir, num_items, text_fields)
    out_path = Path(out_path) if out_path else feature_cache_path(data_dir, 'text', encoder, text_fields=text_fields)
    chosen = '' if text_fields == ALL_FIELDS else f' (fields {text_fields})'
    print(f'text features{chosen}: {len(texts):,} items; ' + ', '.join(f'{k} {v:,}' for k, v in counts.items()))
    table = encode_texts(texts, encoder, device=device, batch_size=batch_size, progress=progress)
    save_feature_table(out_path, table, encoder, text_fields)
    seconds = time.perf_counter() - started
    print(f'wrote {out_path} ({table.shape[0]:,} x {table.shape[1]}) in {seconds:.1f} s')
    return out_path, {'items': len(texts), 'dim': int(table.shape[1]), 'seconds': seconds, 'fields': counts,
                      'text_fields': text_fields}


def build_parser():
    parser = argparse.ArgumentParser(prog='python -m datasets.text_features',
                                     description='Build the frozen text feature table of a P5 folder.')
    parser.add_argument('--data_dir', required=True, help='the P5 folder (datamaps.json, meta.json.gz)')
    parser.add_argument('--language_encoder', default=DEFAULT_LANGUAGE_ENCODER,
                        help='sentence-transformers model id or local folder')
    parser.add_argument('--text_fields', default=ALL_FIELDS,
                        help="'all' (title, price, brand, categories) or a comma list such as 'title'; "
                             "as train.py's --text_fields")
    return add_build_options(parser)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.text_fields = parse_text_fields(args.text_fields)
    except ValueError as error:
        parser.error(str(error))
    out_path = build_output_path(args, 'text', args.language_encoder, args.text_fields)
    try:
        build_text_features(args.data_dir, args.language_encoder, device=args.device, batch_size=args.batch_size,
                            out_path=out_path, progress=not args.no_progress, text_fields=args.text_fields)
    except EncoderError as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
