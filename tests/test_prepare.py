"""Raw Amazon files -> P5 folder (datasets/prepare.py, datasets/raw_amazon.py)."""
import ast
import gzip
import json
import pickle
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasets.prepare import compare_with_published, main, report_statistics
from datasets.raw_amazon import group_by_user, kcore_filter, number_ids

REAL_BEAUTY = Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 'amazon' / 'beauty'

# Per user, rows in file order: (item, time). Ties are resolved by file order. UX has 3 interactions
# and goes in round 1; item G then falls to 4 interactions and goes in round 2.
RAW_ROWS = {
    'UZ': [('C', 300), ('A', 100), ('B', 200), ('D', 200), ('E', 50), ('G', 400)],
    'UX': [('A', 1), ('B', 2), ('G', 3)],
    'UA': [('A', 10), ('B', 10), ('C', 10), ('D', 5), ('F', 20), ('G', 400)],
    'UM': [('F', 1), ('E', 2), ('C', 3), ('B', 4), ('A', 5), ('G', 0)],
    'UB': [('B', 7), ('A', 7), ('D', 7), ('E', 7), ('F', 7), ('G', 7)],
    'UQ': [('A', 9), ('C', 8), ('D', 7), ('E', 6), ('F', 5)],
    'UC': [('B', 1), ('C', 2), ('D', 3), ('E', 4), ('F', 5)],
}
ASIN = {name: f'B00000000{name}' for name in 'ABCDEFGZ'}
EXPECTED_ITEM_ORDER = ['E', 'A', 'B', 'D', 'C', 'F']  # first appearance over the sorted sequences
EXPECTED_SEQUENCES = '1 1 2 3 4 5\n2 4 2 3 5 6\n3 6 1 5 3 2\n4 3 2 4 1 6\n5 6 1 4 5 2\n6 3 5 4 1 6\n'
META = {  # raw metadata lines, as McAuley writes them (Python literals)
    'A': "{'asin': 'B00000000A', 'title': 'Soap &amp; Water', 'price': 12.99, 'imUrl': 'http://img.example/I/a1.jpg', 'categories': [['Beauty', 'Bath']]}",
    'B': "{'asin': 'B00000000B', 'title': 'Brush', 'imUrl': 'http://img.example/I/shared.jpg'}",
    'C': "{'asin': 'B00000000C', 'brand': 'Acme', 'imUrl': 'http://other.example/x/shared.jpg'}",
    'E': "{'asin': 'B00000000E', 'categories': [['Beauty'], ['Gift']], 'imUrl': 'http://img.example/I/e.jpg'}",
    'F': "{'asin': 'B00000000F', 'title': 'Comb'}",
    'G': "{'asin': 'B00000000G', 'title': 'Gone'}",
    'Z': "{'asin': 'B00000000Z', 'title': 'Not in the dataset'}",
}  # D has no metadata


def file_order_rows():
    """(user, item, time) in file order: each user's first row in the order UZ, UX, UA, ..., then the
    remaining rows user by user in reverse order (so users are interleaved in the file)."""
    rows = [(user, *RAW_ROWS[user][0]) for user in RAW_ROWS]
    for user in reversed(list(RAW_ROWS)):
        rows += [(user, item, time) for item, time in RAW_ROWS[user][1:]]
    return rows


def write_raw(raw_dir, fmt):
    raw_dir.mkdir(parents=True, exist_ok=True)
    rows = file_order_rows()
    if fmt == 'reviews':
        with gzip.open(raw_dir / 'reviews_Beauty_5.json.gz', 'wt') as handle:
            for user, item, time in rows:
                handle.write(json.dumps({'reviewerID': user, 'asin': ASIN[item], 'overall': 5.0,
                                         'reviewText': 'ok', 'unixReviewTime': time}) + '\n')
    else:
        (raw_dir / 'ratings_Beauty.csv').write_text(
            ''.join(f'{user},{ASIN[item]},5.0,{time}\n' for user, item, time in rows))
    with gzip.open(raw_dir / 'meta_Beauty.json.gz', 'wt') as handle:
        handle.write(''.join(line + '\n' for line in META.values()))


@pytest.mark.parametrize('fmt', ['reviews', 'ratings'])
def test_whole_pipeline_gives_expected_files(tmp_path, capsys, fmt):
    write_raw(tmp_path / 'raw', fmt)
    status = main(['--dataset_code', 'beauty', '--raw_dir', str(tmp_path / 'raw'),
                   '--data_root', str(tmp_path / 'data'), '--no_progress'])
    assert status == 0
    out_dir = tmp_path / 'data' / 'beauty'
    assert (out_dir / 'sequential_data.txt').read_text() == EXPECTED_SEQUENCES

    datamaps = json.loads((out_dir / 'datamaps.json').read_text())
    assert list(datamaps) == ['user2id', 'item2id', 'id2user', 'id2item']
    assert datamaps['user2id'] == {'UZ': '1', 'UA': '2', 'UM': '3', 'UB': '4', 'UQ': '5', 'UC': '6'}
    assert list(datamaps['item2id'].items()) == [(ASIN[n], str(i)) for i, n in enumerate(EXPECTED_ITEM_ORDER, 1)]
    assert datamaps['id2item'] == {str(i): ASIN[n] for i, n in enumerate(EXPECTED_ITEM_ORDER, 1)}
    assert datamaps['id2user']['1'] == 'UZ'

    with gzip.open(out_dir / 'meta.json.gz', 'rt') as handle:
        meta_lines = handle.read().splitlines()
    assert meta_lines == [META[n] for n in EXPECTED_ITEM_ORDER if n in META]  # raw, in id order, D absent
    assert ast.literal_eval(meta_lines[1])['title'] == 'Soap &amp; Water'  # entities kept

    item2img = pickle.loads((out_dir / 'item2img_dict.pkl').read_bytes())
    assert item2img == {ASIN['E']: 'beauty/e.jpg', ASIN['A']: 'beauty/a1.jpg', ASIN['B']: 'beauty/shared.jpg',
                        ASIN['C']: f'beauty/{ASIN["C"]}.jpg'}  # same file name, other URL: named by ASIN

    out = capsys.readouterr().out
    assert 'fixed point after 3 round(s)' in out
    for label, value in [('users', '6'), ('items', '6'), ('interactions', '30'), ('average length', '5.00'),
                         ('items with metadata', '5'), ('items with images', '4')]:
        line = next(line for line in out.splitlines() if line.startswith(label + ' '))
        assert line.split()[len(label.split())] == value
    assert 'WARNING: beauty differs from the published' in out and 'DIFFERS' in out


def test_reviews_and_ratings_give_identical_files(tmp_path):
    for fmt in ('reviews', 'ratings'):
        write_raw(tmp_path / fmt, fmt)
        main(['--dataset_code', 'beauty', '--raw_dir', str(tmp_path / fmt),
              '--data_root', str(tmp_path / f'out_{fmt}'), '--no_progress'])
    for name in ('sequential_data.txt', 'datamaps.json', 'meta.json.gz', 'item2img_dict.pkl'):
        assert (tmp_path / 'out_reviews/beauty' / name).read_bytes() == (tmp_path / 'out_ratings/beauty' / name).read_bytes()


def test_strict_exits_nonzero_on_differences_and_thresholds_apply(tmp_path, capsys):
    write_raw(tmp_path / 'raw', 'reviews')
    args = ['--dataset_code', 'beauty', '--raw_dir', str(tmp_path / 'raw'), '--data_root', str(tmp_path / 'd'),
            '--no_progress']
    assert main(args + ['--strict']) == 1
    # With thresholds of 3, UX (3 interactions) and item G stay: 7 users, 7 items.
    main(args + ['--min_uc', '3', '--min_sc', '3'])
    assert len((tmp_path / 'd/beauty/sequential_data.txt').read_text().splitlines()) == 7
    assert len(json.loads((tmp_path / 'd/beauty/datamaps.json').read_text())['id2item']) == 7


def test_drop_items_without_meta(tmp_path):
    write_raw(tmp_path / 'raw', 'reviews')
    main(['--dataset_code', 'beauty', '--raw_dir', str(tmp_path / 'raw'), '--data_root', str(tmp_path / 'd'),
          '--no_progress', '--drop_items_without_meta', '--min_uc', '4', '--min_sc', '4'])
    item2id = json.loads((tmp_path / 'd/beauty/datamaps.json').read_text())['item2id']
    assert ASIN['D'] not in item2id and len(item2id) == 6  # A, B, C, E, F, G


def test_kcore_needs_several_rounds():
    # min 2: D is rare -> u4 falls to 1 item -> C falls to 1 -> u3 falls to 1 -> stable.
    users = {'u1': ['A', 'B'], 'u2': ['A', 'B'], 'u3': ['B', 'C'], 'u4': ['C', 'D']}
    filtered, rounds = kcore_filter(users, 2, 2)
    assert filtered == {'u1': ['A', 'B'], 'u2': ['A', 'B']}
    assert rounds == 5  # four rounds that remove something, one that finds the fixed point


def naive_kcore(user_items, min_uc, min_sc):
    """Reference: remove one offending user or item at a time until none is left."""
    user_items = {u: list(items) for u, items in user_items.items()}
    while True:
        counts = {}
        for items in user_items.values():
            for item in items:
                counts[item] = counts.get(item, 0) + 1
        user = next((u for u, items in user_items.items() if len(items) < min_uc), None)
        if user is not None:
            del user_items[user]
            continue
        item = next((i for i, c in counts.items() if c < min_sc), None)
        if item is None:
            return user_items
        user_items = {u: [i for i in items if i != item] for u, items in user_items.items()}


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.integers(0, 12), st.lists(st.integers(0, 8), min_size=1, max_size=8), max_size=12),
       st.integers(1, 4), st.integers(1, 4))
def test_kcore_equals_one_at_a_time_reference(user_items, min_uc, min_sc):
    filtered, _ = kcore_filter(user_items, min_uc, min_sc)
    assert filtered == naive_kcore(user_items, min_uc, min_sc)
    assert all(len(items) >= min_uc for items in filtered.values())


def test_group_by_user_is_stable_and_keeps_first_appearance():
    rows = [('b', 'x', 5), ('a', 'y', 3), ('b', 'z', 5), ('b', 'w', 1), ('a', 'v', 3)]
    assert list(group_by_user(rows).items()) == [('b', ['w', 'x', 'z']), ('a', ['y', 'v'])]


def test_number_ids_rule():
    sequences, maps = number_ids({'p': ['x', 'y'], 'q': ['z', 'x', 'w']})
    assert sequences == [[1, 2], [3, 1, 4]]
    assert maps['item2id'] == {'x': '1', 'y': '2', 'z': '3', 'w': '4'} and maps['id2user'] == {'1': 'p', '2': 'q'}


def test_report_matches_for_published_statistics(capsys):
    stats = {'users': 22363, 'items': 12101, 'interactions': 198502, 'avg_len': 8.88,
             'items_with_meta': 12101, 'items_with_image': 12101}
    assert report_statistics('beauty', stats) == []
    out = capsys.readouterr().out
    assert 'match the published statistics' in out and 'WARNING' not in out
    assert 'note: 12,101 items have an imUrl' in out  # the photo count is a note, not a failure
    assert compare_with_published('beauty', dict(stats, users=1)) == [('users', 1, 22363)]
    assert compare_with_published('mine', stats) == []


@pytest.mark.skipif(not (REAL_BEAUTY / 'datamaps.json').exists(), reason='real Beauty data not present')
def test_reproduces_published_beauty_files_byte_for_byte(tmp_path, capsys):
    """Rebuild a raw reviews file from the published Beauty files (users interleaved, times tied in
    pairs), run the pipeline, and get the published sequential_data.txt and datamaps.json back."""
    published = (REAL_BEAUTY / 'sequential_data.txt').read_text()
    maps = json.loads((REAL_BEAUTY / 'datamaps.json').read_text())
    queues = []
    for line in published.splitlines():
        user, *items = line.split()
        queues.append([(maps['id2user'][user], maps['id2item'][i], 1000 + k // 2) for k, i in enumerate(items)])
    rows = [queue[0] for queue in queues]  # first appearances in user-id order
    # the other rows interleaved at random, each user's rows in order
    turns = [u for u, queue in enumerate(queues) for _ in queue[1:]]
    random.Random(0).shuffle(turns)
    positions = [1] * len(queues)
    for u in turns:
        rows.append(queues[u][positions[u]])
        positions[u] += 1
    raw = tmp_path / 'raw'
    raw.mkdir()
    with gzip.open(raw / 'reviews_Beauty_5.json.gz', 'wt', compresslevel=1) as handle:
        handle.writelines(json.dumps({'reviewerID': u, 'asin': a, 'unixReviewTime': t}) + '\n' for u, a, t in rows)
    assert main(['--dataset_code', 'beauty', '--raw_dir', str(raw), '--meta_file', str(REAL_BEAUTY / 'meta.json.gz'),
                 '--data_root', str(tmp_path / 'data'), '--no_progress', '--interactions_file',
                 str(raw / 'reviews_Beauty_5.json.gz')]) == 0
    out_dir = tmp_path / 'data' / 'beauty'
    assert (out_dir / 'sequential_data.txt').read_text() == published
    assert (out_dir / 'datamaps.json').read_bytes() == (REAL_BEAUTY / 'datamaps.json').read_bytes()
    out = capsys.readouterr().out
    assert 'match the published statistics' in out
    assert 'items with metadata' in out and '12,101' in out
