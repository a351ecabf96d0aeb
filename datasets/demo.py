"""A small synthetic dataset in the P5 layout, with planted structure, made on first use.

Items belong to categories and, within a category, sit on a ring: a user mostly moves to the next
item on the ring of the category they are browsing (sequential structure), sometimes jumps within
the category, rarely anywhere. The frozen "text" and "image" features encode the category and the
ring position with noise (content structure), so a model can learn both what comes next and which
items are alike. Popularity is nearly flat, so a popularity ranking is a weak baseline.
"""
import gzip
import json
import math
import sys
from pathlib import Path

import numpy as np

from datasets.features import feature_cache_path, save_feature_table

DEMO_CODE = 'demo'
DEMO_ENCODER = 'demo-synthetic'  # the encoder name of the demo's synthetic feature tables
NUM_USERS = 1200
NUM_CATEGORIES = 8
ITEMS_PER_CATEGORY = 40
TEXT_DIM = 64
IMAGE_DIM = 48
MIN_LEN, MAX_LEN = 5, 20
P_NEXT, P_SAME_CATEGORY = 0.75, 0.18  # else a jump anywhere


def _features(rng, categories, positions, dim):
    """Category one-hot-ish code + ring angle harmonics + noise, L2-normalised like real encoders."""
    mixing = rng.normal(size=(NUM_CATEGORIES + 4, dim))
    code = np.zeros((len(categories), NUM_CATEGORIES + 4))
    code[np.arange(len(categories)), categories] = 1.0
    angle = 2 * math.pi * positions / ITEMS_PER_CATEGORY
    code[:, NUM_CATEGORIES:] = np.stack([np.cos(angle), np.sin(angle), np.cos(2 * angle), np.sin(2 * angle)], 1)
    table = code @ mixing + 0.3 * rng.normal(size=(len(categories), dim))
    return (table / np.linalg.norm(table, axis=1, keepdims=True)).astype(np.float32)


def demo_files(data_dir):
    """The files the demo is made of: name -> path."""
    data_dir = Path(data_dir)
    return {'sequences': data_dir / 'sequential_data.txt', 'datamaps': data_dir / 'datamaps.json',
            'meta': data_dir / 'meta.json.gz', 'text': feature_cache_path(data_dir, 'text', DEMO_ENCODER),
            'image': feature_cache_path(data_dir, 'image', DEMO_ENCODER)}


def generate(data_dir, seed=0, only=None):
    """Write sequential_data.txt, datamaps.json, meta.json.gz and both feature tables to `data_dir`;
    with `only` (names of demo_files), those files alone. Every file is drawn in the same order from
    one seed, so a file written alone is the one the whole demo holds."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = demo_files(data_dir)
    wanted = set(paths) if only is None else set(only)
    rng = np.random.default_rng(seed)
    num_items = NUM_CATEGORIES * ITEMS_PER_CATEGORY
    # Item ids are shuffled so that id order carries no signal.
    order = rng.permutation(num_items)
    categories = order // ITEMS_PER_CATEGORY
    positions = order % ITEMS_PER_CATEGORY
    slot_to_id = np.empty(num_items, dtype=np.int64)
    slot_to_id[order] = np.arange(1, num_items + 1)

    lines = []
    for user in range(1, NUM_USERS + 1):
        length = int(rng.integers(MIN_LEN, MAX_LEN + 1))
        category = int(rng.integers(NUM_CATEGORIES))
        position = int(rng.integers(ITEMS_PER_CATEGORY))
        items = []
        for _ in range(length):
            items.append(int(slot_to_id[category * ITEMS_PER_CATEGORY + position]))
            draw = rng.random()
            if draw < P_NEXT:
                position = (position + 1) % ITEMS_PER_CATEGORY
            elif draw < P_NEXT + P_SAME_CATEGORY:
                position = int(rng.integers(ITEMS_PER_CATEGORY))
            else:
                category, position = int(rng.integers(NUM_CATEGORIES)), int(rng.integers(ITEMS_PER_CATEGORY))
        lines.append(' '.join(str(i) for i in [user] + items))
    if 'sequences' in wanted:
        paths['sequences'].write_text('\n'.join(lines) + '\n')

    asins = [f'DEMO{i:06d}' for i in range(1, num_items + 1)]
    datamaps = {
        'user2id': {f'U{u:05d}': str(u) for u in range(1, NUM_USERS + 1)},
        'item2id': {asin: str(i) for i, asin in enumerate(asins, start=1)},
        'id2user': {str(u): f'U{u:05d}' for u in range(1, NUM_USERS + 1)},
        'id2item': {str(i): asin for i, asin in enumerate(asins, start=1)},
    }
    if 'datamaps' in wanted:
        paths['datamaps'].write_text(json.dumps(datamaps))
    if 'meta' in wanted:
        with gzip.open(paths['meta'], 'wt') as handle:
            for item_id, asin in enumerate(asins, start=1):
                slot = int(order[item_id - 1])
                record = {'asin': asin, 'title': f'Demo item {item_id} (category {slot // ITEMS_PER_CATEGORY}, '
                          f'step {slot % ITEMS_PER_CATEGORY})', 'categories': [[f'Category {slot // ITEMS_PER_CATEGORY}']]}
                handle.write(repr(record) + '\n')

    by_id = np.argsort(slot_to_id)  # slot of item id 1, 2, ...
    cats, pos = by_id // ITEMS_PER_CATEGORY, by_id % ITEMS_PER_CATEGORY
    text, image = _features(rng, cats, pos, TEXT_DIM), _features(rng, cats, pos, IMAGE_DIM)  # drawn in this order
    if 'text' in wanted:
        save_feature_table(paths['text'], text, DEMO_ENCODER)
    if 'image' in wanted:
        save_feature_table(paths['image'], image, DEMO_ENCODER)


# What a run needs; meta.json.gz is optional (titles only), so a deleted one stays deleted.
NEEDED = ('sequences', 'datamaps', 'text', 'image')


def ensure_demo(data_dir, seed=0):
    """Generate the demo into `data_dir` when it is not there; when only some of its files are
    missing (e.g. a feature table deleted to rebuild it), write those alone and leave the rest."""
    data_dir = Path(data_dir)
    paths = demo_files(data_dir)
    missing = [name for name in NEEDED if not paths[name].exists()]
    if len(missing) == len(NEEDED):
        print(f'Generating the synthetic demo dataset in {data_dir} ...', file=sys.stderr)  # stdout: results only
        generate(data_dir, seed)
    elif missing:
        print(f'Generating the synthetic demo\'s missing files in {data_dir}: '
              f'{", ".join(str(paths[name].relative_to(data_dir)) for name in missing)}', file=sys.stderr)
        generate(data_dir, seed, only=missing)
    return data_dir
