"""--text_fields (item text, cache naming, sidecar check, builder) and --feature_preprocessing
(centre, whiten, and that runs.run_inputs.load_features applies them). Tiny offline encoder only."""
import json

import numpy as np
import pytest
import torch

from config import parse_args
from datasets.feature_builds import ensure_feature_tables
from datasets.feature_preprocessing import preprocess_features
from datasets.features import (FeatureTableError, check_feature_table, feature_cache_path, load_feature_table,
                               save_feature_table)
from datasets.item_text import item_text, parse_text_fields
from datasets.text_features import dataset_item_texts
from datasets.text_features import main as text_main
from runs.run_inputs import load_features
from tests.test_features_build import make_p5_folder, tiny_sentence_encoder  # noqa: F401 (a fixture)

FULL = {'asin': 'A1', 'title': 'Soap &amp; Water', 'price': 12.99, 'brand': 'Acme',
        'categories': [['Beauty', 'Skin Care', 'Face'], ['Gifts']], 'description': 'never used'}
FULL_TEXT = 'Title: Soap &amp; Water\nPrice: 12.99\nBrand: Acme\nCategories: Beauty, Skin Care, Face'


# --- --text_fields: the item text -------------------------------------------------------------

@pytest.mark.parametrize('meta, fields, text', [
    (FULL, 'all', FULL_TEXT),
    (FULL, 'title', 'Title: Soap &amp; Water'),
    (FULL, 'brand,title', 'Title: Soap &amp; Water\nBrand: Acme'),  # template order, not the option's
    (FULL, 'categories', 'Categories: Beauty, Skin Care, Face'),
    (FULL, 'price', 'Price: 12.99'),
    (FULL, 'title,price,brand,categories', FULL_TEXT),
    ({'brand': 'Acme', 'categories': [['Beauty']]}, 'title', 'Untitled Item'),  # none of the chosen fields
    ({'brand': 'Acme', 'title': ''}, 'title,brand', 'Brand: Acme'),
    (None, 'title', 'Untitled Item'),
])
def test_item_text_of_chosen_fields(meta, fields, text):
    assert item_text(meta, fields) == text


def test_all_fields_is_todays_text():
    for meta in (FULL, {'title': 'Comb'}, {'price': 5}, {'categories': []}, None):
        assert item_text(meta, 'all') == item_text(meta)
    assert item_text(FULL) == FULL_TEXT


@pytest.mark.parametrize('text, canonical', [
    ('all', 'all'), (' Brand , TITLE ', 'title,brand'), ('categories,title', 'title,categories'),
    ('title,price,brand,categories', 'all'), ('title,title', 'title')])
def test_parse_text_fields_canonical(text, canonical):
    assert parse_text_fields(text) == canonical


@pytest.mark.parametrize('text', ['', 'description', 'title,all', ','])
def test_parse_text_fields_refuses(text):
    with pytest.raises(ValueError, match='--text_fields must be'):
        parse_text_fields(text)


def test_config_refuses_text_fields_on_the_synthetic_demo(capsys):
    with pytest.raises(SystemExit):
        parse_args(['--dataset_code', 'demo', '--text_fields', 'title'])
    assert "demo's text features are synthetic" in capsys.readouterr().err


# --- --text_fields: cache file and sidecar -----------------------------------------------------

def test_cache_path_names_the_fields(tmp_path):
    assert feature_cache_path(tmp_path, 'text', 'org/enc') == tmp_path / 'features' / 'text_org__enc.npy'
    assert feature_cache_path(tmp_path, 'text', 'org/enc', text_fields='all').name == 'text_org__enc.npy'
    assert feature_cache_path(tmp_path, 'text', 'org/enc', text_fields='title').name == 'text_org__enc__title.npy'
    assert (feature_cache_path(None, 'text', 'org/enc', tmp_path / 'f', 'brand,title')
            == tmp_path / 'f' / 'text_org__enc__title+brand.npy')
    with pytest.raises(ValueError, match='only applies to text'):
        feature_cache_path(tmp_path, 'image', 'org/enc', text_fields='title')


def test_sidecar_fields_mismatch_is_detected(tmp_path):
    table = np.ones((4, 3), dtype=np.float32)
    path = feature_cache_path(tmp_path, 'text', 'enc', text_fields='title')
    save_feature_table(path, table, 'enc', 'title')
    assert json.loads(path.with_suffix('.json').read_text())['text_fields'] == 'title'
    assert check_feature_table(path, 4, 'enc', 'title') is None
    assert "built from the text fields 'title', not 'all'" in check_feature_table(path, 4, 'enc', 'all')
    with pytest.raises(FeatureTableError, match="text fields 'title', not 'title,brand'"):
        load_feature_table(path, 4, 'enc', 'brand,title')

    legacy = feature_cache_path(tmp_path, 'text', 'enc')  # written before --text_fields: all fields
    save_feature_table(legacy, table, 'enc')
    assert 'text_fields' not in json.loads(legacy.with_suffix('.json').read_text())
    assert check_feature_table(legacy, 4, 'enc', 'all') is None
    assert "text fields 'all', not 'title'" in check_feature_table(legacy, 4, 'enc', 'title')


# --- --text_fields: the builder ----------------------------------------------------------------

def test_dataset_item_texts_of_title_only(tmp_path):
    texts, counts = dataset_item_texts(make_p5_folder(tmp_path), text_fields='title')
    assert texts == ['Title: Soap &amp; Water', 'Title: Comb'] + ['Untitled Item'] * 4
    assert counts == {'Title': 2, 'with metadata': 5, 'untitled': 4}


def test_title_build_writes_its_own_file(tmp_path, tiny_sentence_encoder, capsys):  # noqa: F811
    data_dir = make_p5_folder(tmp_path)
    encoder = str(tiny_sentence_encoder)
    assert text_main(['--data_dir', str(data_dir), '--language_encoder', encoder, '--text_fields', 'TITLE',
                      '--no_progress']) == 0
    assert 'text features (fields title): 6 items; Title 2, with metadata 5, untitled 4' in capsys.readouterr().out
    title_path = feature_cache_path(data_dir, 'text', encoder, text_fields='title')
    all_path = feature_cache_path(data_dir, 'text', encoder)
    assert title_path.name.endswith('__title.npy') and title_path.exists() and not all_path.exists()
    assert json.loads(title_path.with_suffix('.json').read_text())['text_fields'] == 'title'

    # train.py's path: the title table is reused; the all-fields table is built next to it.
    kwargs = dict(use_text=True, use_image=False, language_encoder=encoder, img_encoder='unused')
    title = ensure_feature_tables(data_dir, 6, text_fields='title', **kwargs)['text']
    assert 'using the cache' in capsys.readouterr().out
    every = ensure_feature_tables(data_dir, 6, **kwargs)['text']
    assert all_path.exists() and title_path.exists()
    assert torch.allclose(title[2], every[2], atol=1e-6)  # item 2 is 'Title: Comb' either way
    assert not torch.allclose(title[1], every[1], atol=1e-3)  # item 1 has more than a title
    assert torch.allclose(title[3], title[4]) and torch.allclose(title[3], title[6])  # all 'Untitled Item'

    # A table in the title file that other fields built is rebuilt, never used.
    save_feature_table(title_path, np.ones((6, 32), dtype=np.float32), encoder, 'brand')
    rebuilt = ensure_feature_tables(data_dir, 6, text_fields='title', **kwargs)['text']
    assert "built from the text fields 'brand', not 'title'" in capsys.readouterr().out
    assert torch.allclose(rebuilt, title, atol=1e-6)


def test_builder_refuses_unknown_fields(tmp_path, capsys):
    with pytest.raises(SystemExit):
        text_main(['--data_dir', str(tmp_path), '--text_fields', 'colour'])
    assert "--text_fields must be 'all' or a comma list" in capsys.readouterr().err


# --- --feature_preprocessing -------------------------------------------------------------------

def padded(rows):
    table = torch.zeros(rows.shape[0] + 1, rows.shape[1], dtype=torch.float32)
    table[1:] = torch.as_tensor(rows, dtype=torch.float32)
    return table


def unit_rows(rows):
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def anisotropic_table(n=600, d=12, seed=0, smallest=0.05):
    """Unit rows in a cone (a shared offset, unequal variances down to `smallest`), like encoder output."""
    rng = np.random.default_rng(seed)
    return padded(unit_rows(rng.normal(size=(n, d)) * np.geomspace(3.0, smallest, d) + 4.0))


def test_none_is_the_table_itself():
    table = anisotropic_table()
    assert preprocess_features(table, 'none') is table


def test_centre_zeroes_the_column_means():
    table = anisotropic_table()
    out = preprocess_features(table, 'centre')
    assert out.dtype == torch.float32 and out.shape == table.shape and not out[0].any()
    assert out[1:].double().mean(0).abs().max() < 1e-6
    assert torch.allclose(out[1:], table[1:] - table[1:].double().mean(0).float(), atol=1e-6)


def test_whiten_gives_isotropic_covariance_of_the_same_scale():
    table = anisotropic_table(smallest=0.5)
    variances = torch.linalg.eigvalsh(torch.cov(table[1:].double().T, correction=0))
    assert variances.min() > 0.02 * variances.mean()  # full rank, and above the floor (1 % of the mean)
    out = preprocess_features(table, 'whiten')
    assert out.dtype == torch.float32 and not out[0].any()
    rows = out[1:].double()
    assert rows.mean(0).abs().max() < 1e-5
    covariance = (rows - rows.mean(0)).T @ (rows - rows.mean(0)) / len(rows)
    c = covariance.diagonal().mean()
    assert (covariance - c * torch.eye(12, dtype=torch.float64)).abs().max() < 1e-4 * c
    # mean squared row norm kept: 1 for these unit rows
    assert abs(rows.pow(2).sum(1).mean().item() - table[1:].double().pow(2).sum(1).mean().item()) < 1e-5


def test_whiten_floor_bounds_the_gain_of_empty_directions():
    rng = np.random.default_rng(1)
    signal = rng.normal(size=(80, 3)) @ rng.normal(size=(3, 16))  # rank 3 in 16 dimensions
    table = padded(signal + 1e-4 * rng.normal(size=(80, 16)))
    out = preprocess_features(table, 'whiten')[1:].double()
    eigenvalues = torch.linalg.eigvalsh(torch.cov(out.T, correction=0)).flip(0)
    # The 3 real directions are evened out; without the floor, the 13 noise directions would be
    # raised to the same variance. With it, their gain is at most 1/sqrt(1 % of the mean eigenvalue).
    assert (eigenvalues[:3] / eigenvalues[0] - 1).abs().max() < 1e-3
    assert eigenvalues[3:].max() < 1e-4 * eigenvalues[0]
    assert abs(out.pow(2).sum(1).mean().item() - table[1:].double().pow(2).sum(1).mean().item()) < 1e-4


@pytest.mark.parametrize('method', ['centre', 'whiten'])
def test_ties_padding_and_determinism(method):
    table = anisotropic_table(n=50)
    table[7] = table[3]
    table[20] = table[3]
    table[11] = 0.0  # an item without a photo: a zero row, not the padding row
    table[12] = 0.0
    out = preprocess_features(table, method)
    assert torch.equal(out[3], out[7]) and torch.equal(out[3], out[20]) and torch.equal(out[11], out[12])
    assert torch.equal(out[0], torch.zeros(table.shape[1]))
    assert torch.equal(out, preprocess_features(table.clone(), method))
    assert torch.equal(out, preprocess_features(table, method))  # the input is not changed


def test_preprocessing_refuses_what_it_cannot_do():
    table = anisotropic_table(n=10)
    with pytest.raises(ValueError, match='--feature_preprocessing must be one of'):
        preprocess_features(table, 'pca')
    shifted = table.clone()
    shifted[0] = 1.0
    with pytest.raises(FeatureTableError, match='row 0 must be the zero padding row'):
        preprocess_features(shifted, 'centre')
    same = padded(np.ones((5, 4)))
    with pytest.raises(FeatureTableError, match='all 5 item rows are identical'):
        preprocess_features(same, 'whiten')


# --- --feature_preprocessing in runs.run_inputs.load_features --------------------------------------

def demo_features(demo_root, tmp_path, *extra):
    args = parse_args(['--dataset_code', 'demo', '--data_root', str(demo_root), '--export_root',
                       str(tmp_path / 'run'), *extra])
    return load_features(args, 320)


def test_load_features_preprocesses_each_demo_table(demo_root, tmp_path):
    plain = demo_features(demo_root, tmp_path)
    for method in ('centre', 'whiten'):
        tables = demo_features(demo_root, tmp_path, '--feature_preprocessing', method)
        for modality in ('text', 'image'):  # each table on its own statistics
            assert torch.equal(tables[modality], preprocess_features(plain[modality], method))
            assert not torch.allclose(tables[modality], plain[modality], atol=1e-3)
            assert tables[modality][1:].double().mean(0).abs().max() < 1e-5
    text_only = demo_features(demo_root, tmp_path, '--feature_preprocessing', 'centre', '--use_img_encoder', 'False')
    assert text_only['image'] is None and torch.equal(text_only['text'], preprocess_features(plain['text'], 'centre'))


def test_load_features_passes_text_fields_and_preprocessing(tmp_path, tiny_sentence_encoder):  # noqa: F811
    make_p5_folder(tmp_path)
    args = parse_args(['--dataset_code', 'toy', '--data_root', str(tmp_path), '--language_encoder',
                       str(tiny_sentence_encoder), '--use_img_encoder', 'False', '--text_fields', 'title',
                       '--feature_preprocessing', 'whiten', '--export_root', str(tmp_path / 'run')])
    tables = load_features(args, 6)
    path = feature_cache_path(tmp_path / 'toy', 'text', str(tiny_sentence_encoder), text_fields='title')
    raw = load_feature_table(path, 6, str(tiny_sentence_encoder), 'title')
    assert tables['image'] is None and torch.equal(tables['text'], preprocess_features(raw, 'whiten'))
    assert torch.equal(tables['text'][3], tables['text'][4])  # two 'Untitled Item's stay tied
