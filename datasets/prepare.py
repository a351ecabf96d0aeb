"""Raw McAuley Amazon-2014 files -> a P5/VIP5 dataset folder (docs/data.md, section 1).

    python -m datasets.prepare --dataset_code beauty --raw_dir RAW --data_root data

reads `RAW/reviews_Beauty_5.json.gz` (or `RAW/ratings_Beauty.csv`) and `RAW/meta_Beauty.json.gz`,
applies iterated k-core filtering, numbers users and items by the P5 rule (docs/method.md, Data: the rule that
reproduces the published P5 files byte for byte) and writes `data/beauty/`:
sequential_data.txt, datamaps.json, meta.json.gz (the dataset's items only, in item-id order) and
item2img_dict.pkl (ASIN -> `<code>/<image file name>`, from `imUrl`). Then it prints the statistics
and compares them with the published table for the known codes.
"""
import argparse
import gzip
import io
import json
import os
import pickle
import sys
from pathlib import Path

from datasets.raw_amazon import (CATEGORIES, find_raw_files, group_by_user, kcore_filter,
                                 number_ids, read_interactions, read_raw_meta)
from datasets.download_images import image_file_name
from datasets.published_stats import PUBLISHED_STATS
STAT_LABELS = (('users', 'users'), ('items', 'items'), ('interactions', 'interactions'),
               ('avg_len', 'average length'), ('items_with_meta', 'items with metadata'),
               ('items_with_image', 'items with images'))
# The statistics that the raw files and the numbering rule determine. The published image count is
# of photos that were actually downloaded, so an imUrl count may differ without anything being wrong.
CORE_STATS = ('users', 'items', 'interactions', 'avg_len')


def image_paths(id2item, meta, code):
    """ASIN -> `<code>/<file>` for the items whose metadata has an `imUrl`, in item-id order.

    The file name is the URL's last component (what the downloader saves); when two different URLs
    share a name, the later item's file is named after its ASIN so that photos never overwrite."""
    item2img, owner = {}, {}
    for asin in id2item:
        url = (meta.get(asin) or {}).get('imUrl')
        if not url:
            continue
        name = image_file_name(url, asin)
        if owner.setdefault(name, url) != url:
            name = image_file_name(url, asin, prefer_asin=True)
            owner[name] = url
        item2img[asin] = f'{code}/{name}'
    return item2img


def _write_atomic(path, data):
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_p5_folder(out_dir, sequences, datamaps, meta_lines, item2img):
    """Write the four P5 files; each appears whole or not at all (temporary file, then rename)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = ''.join(f'{uid} {" ".join(str(i) for i in items)}\n' for uid, items in enumerate(sequences, 1))
    _write_atomic(out_dir / 'sequential_data.txt', text.encode())
    # json.dumps with default separators and no trailing newline: the published layout.
    _write_atomic(out_dir / 'datamaps.json', json.dumps(datamaps).encode())
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode='wb', mtime=0) as handle:  # mtime=0: reproducible bytes
        handle.write(''.join(line + '\n' for line in meta_lines).encode())
    _write_atomic(out_dir / 'meta.json.gz', buffer.getvalue())
    _write_atomic(out_dir / 'item2img_dict.pkl', pickle.dumps(item2img))


def dataset_statistics(sequences, id2item, meta, item2img):
    interactions = sum(len(s) for s in sequences)
    return {
        'users': len(sequences),
        'items': len(id2item),
        'interactions': interactions,
        'avg_len': round(interactions / len(sequences), 2) if sequences else 0.0,
        'items_with_meta': sum(1 for asin in id2item if asin in meta),
        'items_with_image': len(item2img),
    }


def format_statistics(code, stats):
    published = PUBLISHED_STATS.get(code, {})
    lines = [f'{"statistic":<22}{"this build":>14}{"published":>14}']
    for key, label in STAT_LABELS:
        value = stats[key]
        shown = f'{value:,.2f}' if isinstance(value, float) else f'{value:,}'
        expected = published.get(key)
        expected_shown = '' if expected is None else (
            f'{expected:,.2f}' if isinstance(expected, float) else f'{expected:,}')
        mark = '  <-- DIFFERS' if expected is not None and expected != value else ''
        lines.append(f'{label:<22}{shown:>14}{expected_shown:>14}{mark}')
    return '\n'.join(lines)


def compare_with_published(code, stats, keys=CORE_STATS):
    """[(statistic, built, published)] for every statistic in `keys` that differs from the published table."""
    published = PUBLISHED_STATS.get(code)
    if published is None:
        return []
    return [(key, stats[key], published[key]) for key in keys if stats[key] != published[key]]


def prepare(dataset_code, raw_dir, data_root, *, category=None, interactions_file=None, meta_file=None,
            min_uc=5, min_sc=5, drop_items_without_meta=False, progress=True):
    """Build `<data_root>/<dataset_code>/` from the raw files; returns the statistics dict."""
    category = category or CATEGORIES.get(dataset_code)
    if category is None and (interactions_file is None or meta_file is None):
        raise SystemExit(f'unknown dataset code {dataset_code!r}: pass --category (the McAuley name, '
                         f'e.g. Toys_and_Games) or both --interactions_file and --meta_file.')
    interactions_file, meta_file = find_raw_files(raw_dir, category, interactions_file, meta_file)
    print(f'interactions: {interactions_file}\nmetadata:     {meta_file}')

    interactions = read_interactions(interactions_file, progress=progress)
    print(f'read {len(interactions):,} interactions')
    meta_asins = None
    if drop_items_without_meta:  # the paper's extra filter: one pass over the metadata first
        meta_asins = set(read_raw_meta(meta_file, None, progress=progress))
        interactions = [row for row in interactions if row[1] in meta_asins]
        print(f'kept {len(interactions):,} interactions of items with metadata')
    user_items = group_by_user(interactions)
    user_items, rounds = kcore_filter(user_items, min_uc, min_sc)
    print(f'k-core (users >= {min_uc}, items >= {min_sc}): fixed point after {rounds} round(s)')
    sequences, datamaps = number_ids(user_items)
    id2item = list(datamaps['item2id'])  # ASINs in item-id order

    raw_meta = read_raw_meta(meta_file, set(id2item), progress=progress)
    meta = {asin: record for asin, (_, record) in raw_meta.items()}
    meta_lines = [raw_meta[asin][0] for asin in id2item if asin in raw_meta]
    item2img = image_paths(id2item, meta, dataset_code)

    out_dir = Path(data_root) / dataset_code
    write_p5_folder(out_dir, sequences, datamaps, meta_lines, item2img)
    print(f'wrote {out_dir}/: sequential_data.txt, datamaps.json, meta.json.gz, item2img_dict.pkl')
    return dataset_statistics(sequences, id2item, meta, item2img)


def report_statistics(code, stats, out=None):
    """Print the table; return the list of differences from the published table (printed loudly)."""
    out = out or sys.stdout  # looked up at call time, so redirected output is honoured
    print(format_statistics(code, stats), file=out)
    differences = compare_with_published(code, stats)
    if code not in PUBLISHED_STATS:
        print(f'(no published statistics for {code!r} to compare with)', file=out)
    elif differences:
        banner = '!' * 78
        print(f'\n{banner}\nWARNING: {code} differs from the published P5/VIP5 statistics:', file=out)
        for key, built, published in differences:
            print(f'  {key}: built {built:,} vs published {published:,}', file=out)
        print('Likely causes: the ratings CSV instead of the 5-core reviews file, other --min_uc/--min_sc,\n'
              '--drop_items_without_meta, or a different copy of the raw files.\n'
              f'{banner}', file=out)
    else:
        print(f'{code}: users, items, interactions and average length match the published statistics.',
              file=out)
    for key, built, published in compare_with_published(code, stats, keys=('items_with_image',)):
        print(f'note: {built:,} items have an imUrl; the published {published:,} counts the photos that '
              f'could be downloaded (run python -m datasets.download_images for yours).', file=out)
    return differences


def build_parser():
    parser = argparse.ArgumentParser(prog='python -m datasets.prepare', description=__doc__.split('\n\n')[0])
    parser.add_argument('--dataset_code', required=True, help='beauty, clothing, sports, toys, or your own')
    parser.add_argument('--raw_dir', required=True, help='folder holding the McAuley files')
    parser.add_argument('--data_root', default='data', help='output goes to <data_root>/<dataset_code>/')
    parser.add_argument('--category', default=None, help='McAuley category name, for codes other than the four')
    parser.add_argument('--interactions_file', default=None, help='use this reviews .json(.gz) or ratings .csv')
    parser.add_argument('--meta_file', default=None, help='use this meta_<Category>.json(.gz)')
    parser.add_argument('--min_uc', type=int, default=5, help='minimum interactions per user')
    parser.add_argument('--min_sc', type=int, default=5, help='minimum interactions per item')
    parser.add_argument('--drop_items_without_meta', action='store_true',
                        help='drop items without metadata before k-core (the paper; not the published files)')
    parser.add_argument('--strict', action='store_true',
                        help='exit with status 1 when the statistics differ from the published table')
    parser.add_argument('--no_progress', action='store_true', help='no progress bars')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    stats = prepare(args.dataset_code, args.raw_dir, args.data_root, category=args.category,
                    interactions_file=args.interactions_file, meta_file=args.meta_file,
                    min_uc=args.min_uc, min_sc=args.min_sc,
                    drop_items_without_meta=args.drop_items_without_meta, progress=not args.no_progress)
    differences = report_statistics(args.dataset_code, stats)
    return 1 if differences and args.strict else 0


if __name__ == '__main__':
    sys.exit(main())
