"""New items in an export without retraining (docs/deploy.md, "Adding items to an export").

A text run's item i is W f_i + b (+ e_i for a hybrid): f_i is the item's text encoded by the run's
frozen encoder and transformed by the run's --feature_preprocessing, W and b are the trained
projection, e_i a learned ID row. A new item's f comes from its metadata the way the run's table did
(datasets/item_text.py, datasets/text_features.encode_texts, the statistics fitted on the run's raw
table); its ID row, which only training could learn, is zero. Image features would need photos and
the image encoder, and an ID-only run has nothing to compute a row from: both are refused.
"""
import ast
import gzip
import json
import re
import sys
import zlib
from datetime import datetime, timezone
from pathlib import Path

import torch

from datasets.demo import DEMO_ENCODER
from datasets.encoders import unavailable_reason
from datasets.feature_preprocessing import apply_preprocessing, fit_preprocessing
from datasets.item_text import item_text
from datasets.p5 import read_meta
from datasets.text_features import encode_texts
from deploy.catalogue import Catalogue
from deploy.export_format import build_export, check_finite
from model.fp32_matmul import frozen_input_linear
from runs.run_config import saved_run_args
from runs.run_inputs import load_raw_features, table_path
from runs.trained_run import load_trained_run

MATCH_TOLERANCE = 1e-5      # relative to the largest value: an export of this run differs by fp32 rounding only
ENCODER_CHECK_ITEMS = 4     # existing items encoded again to check the encoder
ENCODER_COSINE = 0.999      # the same encoder on another device or batch: above 0.9999; another encoder: far below
HISTORY_SEPARATOR = re.compile(r'[,\s]')  # where recommend.py splits a history (deploy/recommender.py)


class AddItemsError(RuntimeError):
    """Items that cannot be added to this export; the message says why and what to do instead."""


def add_items_to_export(bundle, export_path, export_root, items_path, data_root=None, accept_changed_inputs=False):
    """A copy of the export dict `bundle` (read from `export_path`) with the items of `items_path`
    appended as ids N+1, N+2, ... in file order. Nothing is written."""
    run_args = saved_run_args(export_root, {'data_root': data_root})
    check_run_can_add(run_args, bundle, export_root, export_path)
    new_items = read_new_items(items_path)
    check_new_asins(new_items, bundle, items_path, export_path)
    args, data, model = load_trained_run(export_root, data_root, accept_changed_inputs)
    check_export_matches_run(bundle, model, args, export_path, export_root)
    if bundle['asins'][1:data.num_items + 1] != [data.id2item[i] for i in range(1, data.num_items + 1)]:
        raise AddItemsError(f'the ASINs of {export_path} are not those of the run\'s dataset ({args.data_root}/'
                            f'{args.dataset_code}): it was exported from other data. Export the run again and add '
                            f'the items to that.')
    raw = load_raw_features(args, data.num_items, build=False)['text']
    rows = new_feature_rows(args, data, raw, [meta for _, meta in new_items])
    extended = extend_export(bundle, model, rows, new_items, Path(items_path).name)
    check_finite(extended, export_path)
    return extended


def check_run_can_add(args, bundle, export_root, export_path):
    """AddItemsError for a run whose new items' rows cannot be computed here (before any loading)."""
    if args.use_img_encoder:
        raise AddItemsError(f'{export_root} uses image features: a new item would need its photo and the image '
                            f'encoder, which adding items does not support. Train again with the new items in the '
                            f'dataset, or add items to a text-only or text hybrid run (--use_img_encoder False).')
    if not args.use_language_encoder:
        raise AddItemsError(f'{export_root} is an ID-only run (no text features): a new item\'s ID row can only be '
                            f'learned by training. Train again with the new items in the dataset, or add items to a '
                            f'text or text hybrid run.')
    if bundle.get('item_input') not in ('table', 'features'):
        raise AddItemsError(f'{export_path} holds an ID table ({bundle.get("item_input")!r}), but {export_root} is a text '
                            f'run: it is not an export of that run. Export the run again (python export.py '
                            f'--export_root {export_root} --size S) and add the items to that.')
    if args.language_encoder == DEMO_ENCODER:
        raise AddItemsError(f'{export_root} is a run on the synthetic demo, whose text features no encoder made, '
                            f'so no new item can get one. Add items to a run trained with a text encoder '
                            f'(--language_encoder).')
    unavailable = unavailable_reason(args.language_encoder)
    if unavailable:
        raise AddItemsError(f'the run\'s text encoder cannot be loaded here: {unavailable}. New items must be encoded '
                            f'by the encoder that built the run\'s text table: make {args.language_encoder} loadable '
                            f'here (download it once with network access, or restore that folder).')


def read_new_items(path):
    """[(asin, metadata dict)] in file order: one Python dict literal (or JSON object) per line, as
    the dataset's meta.json.gz (datasets/p5.read_meta parses the same lines, but keys them by ASIN,
    which would hide a repeated one)."""
    path = Path(path)
    if not path.is_file():
        raise AddItemsError(f'{path} does not exist: give --items a file of the new items\' metadata, one dict '
                            f'such as {{\'asin\': ..., \'title\': ...}} per line (plain or .gz).')
    items, line_number = [], 0
    try:
        with (gzip.open if path.suffix == '.gz' else open)(path, 'rb') as handle:
            for line_number, raw in enumerate(handle, start=1):
                line = raw.decode('utf-8').strip()
                if line:
                    items.append(_item_line(path, line_number, line))
    except UnicodeDecodeError:
        raise AddItemsError(f'{path}, line {line_number + 1}: not UTF-8 text; write the items file as UTF-8.') from None
    except (OSError, EOFError, zlib.error) as error:
        raise AddItemsError(f'{path} cannot be read after line {line_number} ({type(error).__name__}: {error}); '
                            f'write it again (a .gz name needs gzip contents).') from None
    if not items:
        raise AddItemsError(f'{path} holds no items: give one metadata dict per line, such as '
                            f'{{\'asin\': \'B000NEW001\', \'title\': ...}}.')
    return items


def _item_line(path, line_number, line):
    """(asin, metadata) of one line; JSON first, as datasets/p5.read_meta reads the dataset's lines."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        try:
            record = ast.literal_eval(line)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            record = None
    if not isinstance(record, dict):
        raise AddItemsError(f'{path}, line {line_number}: not a Python dict literal or JSON object: {line[:80]!r}. '
                            f'Each line is one item, such as {{\'asin\': \'B000NEW001\', \'title\': ...}}.')
    asin = record.get('asin')
    if not isinstance(asin, str) or not asin.strip():
        raise AddItemsError(f'{path}, line {line_number}: no \'asin\' (a non-empty string): {line[:80]!r}. Give every '
                            f'new item its ASIN: it is how histories and recommendations name it.')
    if HISTORY_SEPARATOR.search(asin):
        raise AddItemsError(f'{path}, line {line_number}: ASIN {asin!r} holds a comma or white space, so a history '
                            f'could not name it (recommend.py splits histories there); use an ASIN without them.')
    return asin, record


def check_new_asins(new_items, bundle, items_path, export_path):
    """AddItemsError for an ASIN repeated in the file or already in the export."""
    seen = {}
    for line, (asin, _) in enumerate(new_items, start=1):
        if asin in seen:
            raise AddItemsError(f'{items_path}: ASIN {asin} is there twice (items {seen[asin]} and {line} of the file); '
                                f'give each new item once.')
        seen[asin] = line
    known = set(bundle['asins'][1:])
    present = [asin for asin, _ in new_items if asin in known]
    if present:
        raise AddItemsError(f'{len(present)} item(s) of {items_path} are already in {export_path} '
                            f'({", ".join(present[:3])}{", ..." if len(present) > 3 else ""}); an item is added once. '
                            f'Remove them from the items file.')


def check_export_matches_run(bundle, model, args, export_path, export_root):
    """AddItemsError unless `bundle` is an export of this run's best checkpoint: the same sizes and
    weights, and item rows 0..N that the run's model gives at its size, to fp32 rounding; the rows
    beyond N must be as many as earlier additions recorded."""
    not_this_run = f'{export_path} is not an export of {export_root}'
    again = f'Export the run again (python export.py --export_root {export_root} --size S) and add the items to that.'
    size, num_items = bundle.get('size'), model.num_items
    if bundle.get('full_sizes') != list(model.sizes) or size not in model.sizes:
        raise AddItemsError(f'{not_this_run}: its sizes {bundle.get("full_sizes")} are not the run\'s {model.sizes}. '
                            f'{again}')
    added = len(bundle.get('added_items', []))
    if bundle['num_items'] - added != num_items:
        raise AddItemsError(f'{not_this_run}: it holds {bundle["num_items"]} items ({added} of them added), the run '
                            f'{num_items}. {again}')
    expected = build_export(model, size, Catalogue(bundle['asins'][:num_items + 1]), args.lru_max_len,
                            keep_features=bundle['item_input'] == 'features')
    pairs = [('item_features', bundle.get('item_features'), expected['item_features'])]
    pairs += [(name, bundle['state_dict'].get(name), tensor) for name, tensor in expected['state_dict'].items()]
    extra = sorted(set(bundle['state_dict']) - set(expected['state_dict']))
    differing = extra + [name for name, got, want in pairs if not _same_leading_rows(got, want, name, num_items)]
    if differing or bundle.get('item_id_embedding') != expected['item_id_embedding']:
        raise AddItemsError(f'{not_this_run}: {", ".join(differing[:3]) or "item_id_embedding"} differ(s) from what '
                            f'the run\'s best checkpoint gives at size {size}. {again}')


def _same_leading_rows(got, want, name, num_items):
    """Whether `got` equals `want` to fp32 rounding; item tables on their rows 0..N only."""
    if got is None or want is None:
        return got is None and want is None
    if name in ('item_features', 'id_embedding.weight'):
        if got.shape[0] < num_items + 1:
            return False
        got = got[:num_items + 1]
    if got.shape != want.shape:
        return False
    scale = max(float(want.abs().max()), 1e-12) if want.numel() else 1.0
    return bool(((got.float() - want.float()).abs() <= MATCH_TOLERANCE * scale).all())


def new_feature_rows(args, data, raw, metas):
    """(K, d) float32 preprocessed text rows of the new items: item_text -> encode_texts -> the map
    fitted on the run's raw table. A few existing items are encoded along with them: their rows must
    come out as the run's table has them, else the encoder is not the one that built it."""
    texts = [item_text(meta, args.text_fields) for meta in metas]
    meta_path = Path(data.data_dir) / 'meta.json.gz'
    check_ids = _encoder_check_ids(data) if meta_path.exists() else []
    if not check_ids:
        print(f'note: {meta_path} is missing, so the encoder was not checked against the run\'s text table',
              file=sys.stderr)
    known = read_meta(meta_path) if check_ids else {}
    check_texts = [item_text(known.get(data.id2item[i]), args.text_fields) for i in check_ids]
    encoded = torch.from_numpy(encode_texts(check_texts + texts, args.language_encoder, progress=False))
    if encoded.shape[1] != raw.shape[1]:
        raise AddItemsError(f'the text encoder {args.language_encoder} gives {encoded.shape[1]}-d rows, the run\'s '
                            f'text table has {raw.shape[1]} columns: it is not the encoder that built the table.')
    agreement = (encoded[:len(check_ids)] * raw[check_ids]).sum(1)  # cosines: both sides are unit rows
    if len(check_ids) and float(agreement.min()) < ENCODER_COSINE:
        table = table_path(args, 'text', args.language_encoder, args.text_fields)
        raise AddItemsError(f'the text encoder {args.language_encoder} does not reproduce the run\'s text table {table} '
                            f'(cosine {float(agreement.min()):.4f} for an existing item, below {ENCODER_COSINE}): it is '
                            f'not the encoder, or the version, that built it. Restore the encoder the run was '
                            f'trained with.')
    fitted = fit_preprocessing(raw, args.feature_preprocessing, 'text features')  # the run's own statistics
    return apply_preprocessing(fitted, encoded[len(check_ids):])


def _encoder_check_ids(data):
    """Up to ENCODER_CHECK_ITEMS existing item ids spread over the catalogue."""
    count = min(ENCODER_CHECK_ITEMS, data.num_items)
    return sorted({1 + (data.num_items - 1) * k // max(count - 1, 1) for k in range(count)})


@torch.no_grad()
def extend_export(bundle, model, rows, new_items, items_name):
    """`bundle` with K new items: their rows, ASINs, titles and the record of the addition."""
    size, count = bundle['size'], len(new_items)
    state = dict(bundle['state_dict'])
    extended = dict(bundle, state_dict=state)
    if bundle['item_input'] == 'table':
        # What item_table_at gives an item with these features and a zero ID row: W f + b, first s columns.
        projected = frozen_input_linear(rows, model.projection.weight, model.projection.bias)[:, :size]
        state['id_embedding.weight'] = torch.cat([state['id_embedding.weight'], projected.float()])
    else:
        extended['item_features'] = torch.cat([bundle['item_features'], rows.to(bundle['item_features'].dtype)])
        if 'id_embedding.weight' in state:  # the hybrid's ID rows: zero for items training never saw
            ids = state['id_embedding.weight']
            state['id_embedding.weight'] = torch.cat([ids, ids.new_zeros(count, ids.shape[1])])
    extended['num_items'] = bundle['num_items'] + count
    extended['asins'] = list(bundle['asins']) + [asin for asin, _ in new_items]
    extended['titles'] = _titles(bundle, new_items)
    date = datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
    extended['added_items'] = list(bundle.get('added_items', [])) + [
        {'item': bundle['num_items'] + k, 'asin': asin, 'items_file': items_name, 'date': date}
        for k, (asin, _) in enumerate(new_items, start=1)]
    return extended


def _titles(bundle, new_items):
    """The titles list with the new items' (None where an item has none). An export without titles (a
    dataset without metadata) stays without, unless a new item has one: then every earlier item is None."""
    titles = [None if meta.get('title') is None else str(meta['title']) for _, meta in new_items]
    if bundle['titles'] is None and all(title is None for title in titles):
        return None
    return list(bundle['titles'] or [None] * (bundle['num_items'] + 1)) + titles
