"""Frozen text features (docs/method.md, Item features): the item text of every item, encoded by a sentence-transformers model.

    python -m datasets.text_features --data_dir data/beauty [--language_encoder BAAI/bge-large-en-v1.5]

writes `<data_dir>/features/text_<encoder>.npy` (N x d, row i-1 = item id i, L2-normalised) and its
sidecar (see datasets/features.py). `--language_encoder` is a model id or a local folder that
`SentenceTransformer(...)` loads; `--out` writes the table elsewhere (for read-only data folders).
`--text_fields title` (or e.g. `title,brand`) encodes those fields only, into
`text_<encoder>__title.npy`, so it never replaces the table of all fields.

A table that cannot tell items apart is never built or cached: when more than 90% of the items
would share one text (every item is "Untitled Item" when meta.json.gz is missing), or the encoder
gives more than 90% of them one vector, the build stops naming the cause; above 50% it warns. With
all fields the paper's datasets stay far below (at most 1.3% of the items share one text, on
Sports); a field a dataset lacks is refused alone (`--text_fields title` on Sports, which has no
titles). docs/resume.md.
"""
import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from datasets.encoders import DEFAULT_LANGUAGE_ENCODER, EncoderError, load_failure
from datasets.features import add_build_options, build_output_path, feature_cache_path, save_feature_table
from datasets.item_text import ALL_FIELDS, UNTITLED_ITEM, chosen_fields, item_fields, item_text, parse_text_fields
from datasets.p5 import DataError, check_item_ids, read_datamaps, read_meta

SAME_ROW_LIMIT = 0.9     # more than this share of items with one text (or one row): no table
SAME_ROW_WARNING = 0.5   # more than this share: a warning


class DegenerateTableError(ValueError):
    """The text feature table would give (nearly) every item the same row."""


def dataset_item_ids(data_dir, num_items=None):
    """ASINs of item ids 1..N (index 0 = item 1), checked against `num_items` when given; DataError
    for a missing or broken datamaps.json."""
    path = Path(data_dir) / 'datamaps.json'
    id2item = read_datamaps(path)
    count = check_item_ids(path, id2item)
    if num_items is not None and num_items != count:
        raise DataError(f'{path} has {count} items but the dataset has {num_items}; '
                        f'the id maps and the sequences do not belong together')
    return [id2item[i] for i in range(1, count + 1)]


def dataset_item_texts(data_dir, num_items=None, text_fields=ALL_FIELDS):
    """(texts of the chosen fields in item-id order, how many items have each chosen field and how
    many have metadata at all)."""
    text_fields = parse_text_fields(text_fields)
    asins = dataset_item_ids(data_dir, num_items)
    meta_path = Path(data_dir) / 'meta.json.gz'
    meta = read_meta(meta_path) if meta_path.exists() else {}  # no metadata: check_texts_differ says so
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


def _same_text_cause(text, counts, meta_path, text_fields, num_items):
    """Why `text` is the text of most items, and what to do: (cause, fix)."""
    no_text = 'or train without text features (--no-use_language_encoder)'
    if not meta_path.exists():
        return f'because {meta_path} is missing', f'Restore {meta_path} (docs/data.md), {no_text}.'
    if text == UNTITLED_ITEM and counts['with metadata'] <= SAME_ROW_LIMIT * num_items:
        return (f'because only {counts["with metadata"]:,} of the {num_items:,} items have a line in {meta_path}',
                f'Restore the complete {meta_path} of this dataset (docs/data.md), {no_text}.')
    if text == UNTITLED_ITEM:
        return (f'because they have none of the fields {text_fields} in {meta_path}',
                f'Choose other --text_fields, {no_text}.')
    return (f'as {meta_path} describes them', f'Check {meta_path}, choose other --text_fields, {no_text}.')


def check_texts_differ(texts, counts, data_dir, text_fields=ALL_FIELDS):
    """DegenerateTableError when more than SAME_ROW_LIMIT of the items share one text (their rows
    would be identical), naming the cause; a warning above SAME_ROW_WARNING."""
    if not texts:
        return
    text, count = Counter(texts).most_common(1)[0]
    share = count / len(texts)
    if share <= SAME_ROW_WARNING:
        return
    meta_path = Path(data_dir) / 'meta.json.gz'
    cause, fix = _same_text_cause(text, counts, meta_path, text_fields, len(texts))
    same = f'{count:,} of {len(texts):,} items ({share:.0%}) have the same text, {text[:60]!r}, {cause}'
    if share > SAME_ROW_LIMIT:
        raise DegenerateTableError(f'the text features of {data_dir} cannot be built: {same}. A table whose rows '
                                   f'are nearly all the same cannot tell items apart, so none is built or cached '
                                   f'(the limit is {SAME_ROW_LIMIT:.0%} of the items). {fix}')
    print(f'warning: text features: {same}; a text-only model cannot tell those items apart.')


def most_common_row_share(table, tolerance=1e-5, candidates=8):
    """(how many rows equal one row up to `tolerance`, all rows) of an (N, d) array, that row being the
    best of `candidates` evenly spaced ones: enough to find a row that most rows share. A tolerance,
    because one text encoded in batches of different padding differs in the last bits."""
    table = np.asarray(table, dtype=np.float32)
    if len(table) == 0:
        return 0, 0
    picks = np.unique(np.linspace(0, len(table) - 1, num=min(candidates, len(table))).astype(int))
    count = max(int((np.abs(table - table[i]).max(axis=1) <= tolerance).sum()) for i in picks)
    return count, len(table)


def same_row_problem(path):
    """None, or why the cached text table at `path` cannot tell items apart (more than SAME_ROW_LIMIT
    of its rows identical: a table built before this check, e.g. without metadata)."""
    count, total = most_common_row_share(np.load(path, mmap_mode='r'))
    if total and count / total > SAME_ROW_LIMIT:
        return f'{path} gives {count:,} of its {total:,} items the same row (built without item metadata?)'
    return None


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
    check_texts_differ(texts, counts, data_dir, text_fields)  # before the encoder is loaded
    table = encode_texts(texts, encoder, device=device, batch_size=batch_size, progress=progress)
    count, total = most_common_row_share(table)
    if total and count / total > SAME_ROW_LIMIT:  # distinct texts, one vector: the encoder is broken
        raise DegenerateTableError(f'the text features of {data_dir} cannot be built: the encoder {encoder} gives '
                                   f'{count:,} of {total:,} items the same vector although their texts differ, so '
                                   f'no table is cached. Check the encoder (--language_encoder).')
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
    except (EncoderError, DataError, DegenerateTableError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
