"""Frozen text features (SPEC §2): the item text of every item, encoded by a sentence-transformers model.

    python -m datasets.text_features --data_dir data/beauty [--language_encoder BAAI/bge-large-en-v1.5]

writes `<data_dir>/features/text_<encoder>.npy` (N x d, row i-1 = item id i, L2-normalised) and its
sidecar (see datasets/features.py). `--language_encoder` is a model id or a local folder that
`SentenceTransformer(...)` loads; `--out` writes the table elsewhere (for read-only data folders).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

from datasets.features import add_build_options, build_output_path, feature_cache_path, save_feature_table
from datasets.item_text import TEXT_FIELDS, item_fields, item_text

DEFAULT_LANGUAGE_ENCODER = 'BAAI/bge-large-en-v1.5'


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


def dataset_item_texts(data_dir, num_items=None):
    """(texts in item-id order, how many items have each field and how many have metadata at all)."""
    from datasets.p5 import read_meta
    asins = dataset_item_ids(data_dir, num_items)
    meta_path = Path(data_dir) / 'meta.json.gz'
    meta = read_meta(meta_path) if meta_path.exists() else {}
    if not meta:
        print(f'warning: no metadata in {meta_path}; every item is "Untitled Item"')
    counts = {label: 0 for _, label in TEXT_FIELDS}
    counts['with metadata'] = counts['untitled'] = 0
    texts = []
    for asin in asins:
        record = meta.get(asin)
        counts['with metadata'] += record is not None
        fields = item_fields(record)
        for label, _ in fields:
            counts[label] += 1
        counts['untitled'] += not fields
        texts.append(item_text(record))
    return texts, counts


def encode_texts(texts, encoder, *, device='cpu', batch_size=64, progress=True):
    """(len(texts), d) float32 array of L2-normalised sentence embeddings.

    sentence-transformers batches the texts itself (sorted by length, so little padding)."""
    from sentence_transformers import SentenceTransformer  # slow import: only when encoding
    model = SentenceTransformer(str(encoder), device=device)
    embeddings = model.encode(list(texts), batch_size=batch_size, show_progress_bar=progress,
                              convert_to_numpy=True, normalize_embeddings=True)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    # normalize again in float32 so that every row has norm 1 up to float32 rounding
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def build_text_features(data_dir, encoder=DEFAULT_LANGUAGE_ENCODER, *, num_items=None, device='cpu',
                        batch_size=64, out_path=None, progress=True):
    """Encode the item texts of a P5 folder and cache them; returns (path, info dict)."""
    started = time.perf_counter()
    texts, counts = dataset_item_texts(data_dir, num_items)
    out_path = Path(out_path) if out_path else feature_cache_path(data_dir, 'text', encoder)
    print(f'text features: {len(texts):,} items; ' + ', '.join(f'{k} {v:,}' for k, v in counts.items()))
    table = encode_texts(texts, encoder, device=device, batch_size=batch_size, progress=progress)
    save_feature_table(out_path, table, encoder)
    seconds = time.perf_counter() - started
    print(f'wrote {out_path} ({table.shape[0]:,} x {table.shape[1]}) in {seconds:.1f} s')
    return out_path, {'items': len(texts), 'dim': int(table.shape[1]), 'seconds': seconds, 'fields': counts}


def build_parser():
    parser = argparse.ArgumentParser(prog='python -m datasets.text_features',
                                     description='Build the frozen text feature table of a P5 folder.')
    parser.add_argument('--data_dir', required=True, help='the P5 folder (datamaps.json, meta.json.gz)')
    parser.add_argument('--language_encoder', default=DEFAULT_LANGUAGE_ENCODER,
                        help='sentence-transformers model id or local folder')
    return add_build_options(parser)


def main(argv=None):
    args = build_parser().parse_args(argv)
    out_path = build_output_path(args, 'text', args.language_encoder)
    build_text_features(args.data_dir, args.language_encoder, device=args.device,
                        batch_size=args.batch_size, out_path=out_path, progress=not args.no_progress)
    return 0


if __name__ == '__main__':
    sys.exit(main())
