"""The P5 loader, the split and the training examples (docs/method.md, Data), feature tables, and their errors."""
import json

import numpy as np
import pytest
import torch

from datasets.features import FeatureTableError, feature_cache_path, load_feature_table, save_feature_table
from datasets.p5 import DataError, evaluation_examples, leave_one_out, load_p5, read_meta, training_examples
from tests.conftest import SHARED_DATA


def write_p5(folder, lines, num_items):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'sequential_data.txt').write_text('\n'.join(lines) + '\n')
    item2id = {f'A{i}': str(i) for i in range(1, num_items + 1)}
    (folder / 'datamaps.json').write_text(json.dumps({'item2id': item2id, 'id2item': {v: k for k, v in item2id.items()}}))
    return folder


def test_split_and_training_examples_follow_the_spec():
    seqs = {1: [5, 6, 7, 8, 9], 2: list(range(1, 9))}
    train, val, test = leave_one_out(seqs)
    assert train[1] == [5, 6, 7] and val[1] == 8 and test[1] == 9
    tokens, labels = training_examples(train, max_len=4)
    # user 1: labels = s[-4:] = [5,6,7] padded; tokens = s[:-1][-4:] = [5,6] padded separately
    assert labels[0].tolist() == [0, 5, 6, 7] and tokens[0].tolist() == [0, 0, 5, 6]
    # user 2 (train 1..6, longer than L): aligned windows
    assert labels[1].tolist() == [3, 4, 5, 6] and tokens[1].tolist() == [2, 3, 4, 5]
    users, inputs, targets, history = evaluation_examples({u: train[u] + [val[u]] for u in train}, test, 4)
    assert users.tolist() == [1, 2] and inputs[0].tolist() == [5, 6, 7, 8] and targets.tolist() == [9, 8]
    assert history[1].tolist() == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.skipif(not (SHARED_DATA / 'beauty').exists(), reason='real data folder absent')
@pytest.mark.parametrize('code, users, items, interactions', [
    ('beauty', 22363, 12101, 198502), ('sports', 35598, 18357, 296337), ('clothing', 39387, 23033, 278677)])
def test_real_amazon_folders_load_with_published_statistics(code, users, items, interactions):
    data = load_p5(SHARED_DATA / code)
    assert (data.num_users, data.num_items, data.num_interactions) == (users, items, interactions)
    assert min(len(s) for s in data.sequences.values()) >= 5


@pytest.mark.skipif(not (SHARED_DATA / 'beauty' / 'meta.json.gz').exists(), reason='real meta absent')
def test_real_beauty_meta_parses_as_python_literals():
    meta = read_meta(SHARED_DATA / 'beauty' / 'meta.json.gz')
    data = load_p5(SHARED_DATA / 'beauty')
    assert len(meta) >= 12000 and all(data.id2item[i] in meta for i in (1, 100, 12101))
    assert isinstance(next(iter(meta.values()))['categories'], list)


def test_missing_folder_and_files_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match='does not exist'):
        load_p5(tmp_path / 'nope')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DataError, match='datamaps.json is missing'):
        load_p5(tmp_path / 'empty')


@pytest.mark.parametrize('line, message', [
    ('1 2 x 4', 'line 2: not a list of integer ids'),
    ('1 2 3', 'line 2: user 1 appears twice'),
    ('2 3 4', 'fewer|has 2 items'),
    ('2 3 4 99', 'item id 99 is outside 1..10'),
])
def test_malformed_sequences_name_the_line(tmp_path, line, message):
    folder = write_p5(tmp_path / 'bad', ['1 1 2 3', line], num_items=10)
    with pytest.raises(DataError, match=message):
        load_p5(folder)


def test_feature_tables_round_trip_with_padding_row(tmp_path):
    table = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    path = feature_cache_path(tmp_path, 'text', 'org/enc')
    assert path.name == 'text_org__enc.npy'
    save_feature_table(path, table, 'org/enc')
    loaded = load_feature_table(path, 5, 'org/enc')
    assert loaded.shape == (6, 3) and torch.count_nonzero(loaded[0]) == 0
    assert torch.allclose(loaded[1:], torch.from_numpy(table))


def test_inconsistent_feature_tables_are_refused(tmp_path):
    path = feature_cache_path(tmp_path, 'image', 'enc')
    save_feature_table(path, np.ones((4, 2)), 'enc')
    with pytest.raises(FeatureTableError, match='has shape \\(4, 2\\) but the dataset has 5 items'):
        load_feature_table(path, 5, 'enc')
    with pytest.raises(FeatureTableError, match="built by encoder 'enc'"):
        load_feature_table(path, 4, 'other')
    bad = np.ones((4, 2))
    bad[2, 1] = np.nan
    save_feature_table(path, bad, 'enc')
    with pytest.raises(FeatureTableError, match='NaN'):
        load_feature_table(path, 4, 'enc')
    with pytest.raises(FeatureTableError, match='does not exist'):
        load_feature_table(tmp_path / 'missing.npy', 4)
