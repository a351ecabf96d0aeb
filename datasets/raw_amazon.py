"""Reading McAuley's raw Amazon-2014 files, k-core filtering and the P5 id numbering.

Raw formats:
- 5-core reviews `reviews_<Category>_5.json(.gz)`: one JSON object per line with `reviewerID`,
  `asin`, `unixReviewTime` (lines that are Python literals are accepted too);
- ratings `ratings_<Category>.csv`: `user,item,rating,timestamp`, no header (one is skipped if present);
- metadata `meta_<Category>.json(.gz)`: one Python dict literal per line (`ast.literal_eval`, never
  `eval`; JSON lines are accepted too).
Interactions are kept as they come, repeated (user, item) pairs included, like the code that
produced the published files.
"""
import ast
import csv
import gzip
import json
import re
from collections import Counter
from pathlib import Path

from tqdm import tqdm

CATEGORIES = {'beauty': 'Beauty', 'clothing': 'Clothing_Shoes_and_Jewelry',
              'sports': 'Sports_and_Outdoors', 'toys': 'Toys_and_Games'}

# Finds the ASIN of a metadata line without parsing it: parsing every line of a large category's
# metadata is the slow part, and only the dataset's items are needed.
_ASIN_PATTERN = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")


def open_text(path):
    path = Path(path)
    if path.suffix == '.gz':
        return gzip.open(path, 'rt', encoding='utf-8')
    return open(path, encoding='utf-8')


def find_raw_files(raw_dir, category, interactions_file=None, meta_file=None):
    """(interactions file, metadata file): the given ones, else found in `raw_dir` by McAuley's
    names (the 5-core reviews win over the ratings CSV). Raises SystemExit naming what is missing."""
    raw_dir = Path(raw_dir)
    interaction_names = [f'reviews_{category}_5.json.gz', f'reviews_{category}_5.json',
                         f'ratings_{category}.csv', f'ratings_{category}.csv.gz']
    meta_names = [f'meta_{category}.json.gz', f'meta_{category}.json']
    found = []
    for given, names in ((interactions_file, interaction_names), (meta_file, meta_names)):
        if given is not None:
            if not Path(given).exists():
                raise SystemExit(f'{given} does not exist')
            found.append(Path(given))
            continue
        path = next((raw_dir / n for n in names if (raw_dir / n).exists()), None)
        if path is None:
            raise SystemExit(f'{raw_dir} has none of {", ".join(names)}. Download the Amazon-2014 files '
                             f'(https://jmcauley.ucsd.edu/data/amazon/links.html) into it; see docs/data.md.')
        found.append(path)
    return tuple(found)


def _parse_record(line):
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return ast.literal_eval(line)


def read_interactions(path, progress=True):
    """[(user, item, time)] in file order, from a reviews JSON-lines file or a ratings CSV."""
    path = Path(path)
    rows = []
    is_csv = path.name.endswith('.csv') or path.name.endswith('.csv.gz')
    with open_text(path) as handle:
        lines = tqdm(handle, desc=f'reading {path.name}', unit=' lines', disable=not progress)
        if is_csv:
            for number, fields in enumerate(csv.reader(lines), start=1):
                if not fields:
                    continue
                if len(fields) < 4:
                    raise ValueError(f'{path}, line {number}: expected user,item,rating,timestamp, got {fields}')
                try:
                    time = int(float(fields[3]))
                except ValueError:
                    if number == 1:  # a header row
                        continue
                    raise ValueError(f'{path}, line {number}: timestamp {fields[3]!r} is not a number') from None
                rows.append((fields[0], fields[1], time))
        else:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = _parse_record(line)
                    rows.append((record['reviewerID'], record['asin'], int(record['unixReviewTime'])))
                except (ValueError, SyntaxError, KeyError) as error:
                    raise ValueError(f'{path}, line {number}: not a review with reviewerID, asin and '
                                     f'unixReviewTime ({error!r})') from None
    return rows


def group_by_user(interactions):
    """user -> items sorted by time. Users stay in order of first appearance; the sort is stable,
    so interactions with equal times keep their file order."""
    user_rows = {}
    for user, item, time in interactions:
        user_rows.setdefault(user, []).append((time, item))
    return {user: [item for _, item in sorted(rows, key=lambda row: row[0])]
            for user, rows in user_rows.items()}


def kcore_filter(user_items, min_uc=5, min_sc=5):
    """Drop users with fewer than `min_uc` interactions and items with fewer than `min_sc`,
    repeating until nothing changes. Returns (filtered user -> items, number of rounds).

    Every removal is of a user or item below its threshold at that moment, so the result is the
    unique largest subset in which all counts meet the thresholds (the k-core), whatever the order."""
    user_items = dict(user_items)
    rounds = 0
    while True:
        rounds += 1
        item_counts = Counter(item for items in user_items.values() for item in items)
        rare_items = {item for item, count in item_counts.items() if count < min_sc}
        short_users = {user for user, items in user_items.items() if len(items) < min_uc}
        if not rare_items and not short_users:
            return user_items, rounds
        user_items = {user: [item for item in items if item not in rare_items]
                      for user, items in user_items.items() if user not in short_users}
        user_items = {user: items for user, items in user_items.items() if items}


def number_ids(user_items):
    """The P5 numbering (docs/method.md, Data): users 1..U in order of first appearance (the dict order), items 1..I in order of
    first appearance reading the users' sequences in user-id order.
    Returns (sequences: list of item-id lists, index 0 = user 1; datamaps in the published layout)."""
    user2id, item2id = {}, {}
    sequences = []
    for user, items in user_items.items():
        user2id[user] = str(len(user2id) + 1)
        ids = []
        for item in items:
            if item not in item2id:
                item2id[item] = str(len(item2id) + 1)
            ids.append(int(item2id[item]))
        sequences.append(ids)
    datamaps = {'user2id': user2id, 'item2id': item2id,
                'id2user': {uid: user for user, uid in user2id.items()},
                'id2item': {iid: item for item, iid in item2id.items()}}
    return sequences, datamaps


def read_raw_meta(path, asins=None, progress=True):
    """ASIN -> (line to write, record) for the ASINs in `asins` (all when None).

    The line is the raw text when it is a Python literal (kept byte for byte, HTML entities
    included), else the record's repr, so that meta.json.gz is always literal_eval-able.
    When an ASIN appears twice the later line wins, as in the released loader."""
    found = {}
    with open_text(path) as handle:
        for number, line in enumerate(tqdm(handle, desc=f'reading {Path(path).name}', unit=' lines',
                                           disable=not progress), start=1):
            line = line.rstrip('\r\n')
            if not line.strip():
                continue
            match = _ASIN_PATTERN.search(line)
            if asins is not None and match is not None and match.group(1) not in asins:
                continue
            try:
                record, text = ast.literal_eval(line), line
            except (ValueError, SyntaxError):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise ValueError(f'{path}, line {number}: neither a Python dict literal nor JSON: '
                                     f'{line[:80]!r}') from None
                text = repr(record)
            if not isinstance(record, dict) or 'asin' not in record:
                raise ValueError(f'{path}, line {number}: expected a dict with an "asin" key')
            if asins is None or record['asin'] in asins:
                found[record['asin']] = (text, record)
    return found
