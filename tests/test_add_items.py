"""add_items.py: new items appended to an export score as the run's full model scores their text
(encoded, preprocessed with the run's statistics, projected, zero ID row), existing items do not
move, recommend.py serves them, and what cannot be done is refused in one line. The oracle is built
here: the tiny encoder called directly, the preprocessing map in numpy, the projection by hand."""
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import add_items as add_items_script
import export as export_script
import recommend as recommend_script
import train as train_script
from datasets.features import feature_cache_path
from deploy.export_format import export_bytes, load_export, read_export
from fake_run import copy_demo, make_run
from runs.trained_run import load_trained_run
from tests.test_features_build import tiny_sentence_encoder  # noqa: F401 (a fixture)

SIZES = [8, 16, 32]
MAX_LEN = 20
NUM_ITEMS = 320  # the demo's catalogue
NEW_ITEMS = [
    {'asin': 'NEW000001', 'title': 'Demo item 999 (category 2, step 7)', 'categories': [['Category 2']]},
    {'asin': 'NEW000002', 'title': 'A brand new item', 'brand': 'Acme', 'price': 4.5},
    {'asin': 'NEW000003'},  # no text fields at all: 'Untitled Item', no title
]


# ---- fixtures: a tiny text dataset and two trained runs --------------------------------------------

@pytest.fixture(scope='module')
def toy_root(tmp_path_factory, demo_root):
    """The demo as dataset 'toy' (300 users), without its synthetic tables: text is encoded for real."""
    root = tmp_path_factory.mktemp('toy_data')
    shutil.copytree(demo_root / 'demo', root / 'toy')
    shutil.rmtree(root / 'toy' / 'features')
    sequences = root / 'toy' / 'sequential_data.txt'
    sequences.write_text('\n'.join(sequences.read_text().splitlines()[:300]) + '\n')
    return root


def train_run(run, toy_root, encoder, *extra):
    train_script.main(['--dataset_code', 'toy', '--data_root', str(toy_root), '--export_root', str(run),
                       '--mrl_hidden_sizes', ','.join(map(str, SIZES)), '--num_epochs', '1', '--lru_max_len',
                       str(MAX_LEN), '--use_img_encoder', 'False', '--language_encoder', str(encoder),
                       '--no-use_tensorboard', *extra])
    return run


@pytest.fixture(scope='module')
def hybrid_run(tmp_path_factory, toy_root, tiny_sentence_encoder):  # noqa: F811
    return train_run(tmp_path_factory.mktemp('runs') / 'hybrid', toy_root, tiny_sentence_encoder,
                     '--feature_preprocessing', 'whiten', '--item_id_embedding')


@pytest.fixture(scope='module')
def text_run(tmp_path_factory, toy_root, tiny_sentence_encoder):  # noqa: F811
    return train_run(tmp_path_factory.mktemp('runs') / 'text', toy_root, tiny_sentence_encoder,
                     '--feature_preprocessing', 'centre')


def write_items(path, records, gz=False):
    lines = ''.join(repr(record) + '\n' for record in records)
    if gz:
        with gzip.open(path, 'wt') as handle:
            handle.write(lines)
    else:
        path.write_text(lines)
    return path


def export(run, path, size, keep_features=False):
    export_script.main(['--export_root', str(run), '--size', str(size), '--out', str(path)]
                       + (['--keep_features'] if keep_features else []))
    return path


def add(run, export_path, items, *extra):
    return add_items_script.main(['--export_root', str(run), '--export', str(export_path), '--items', str(items),
                                  *extra])


# ---- the oracle ------------------------------------------------------------------------------------

def numpy_preprocessing(raw, method):
    """The map of docs/content_features.md in numpy: centre, or ZCA-whiten with the eigenvalue floor
    and the mean squared norm kept; statistics of the item rows 1..N."""
    rows = raw[1:].astype(np.float64)
    mean = rows.mean(0)
    if method == 'centre':
        return lambda x: x - mean
    centred = rows - mean
    eigenvalues, vectors = np.linalg.eigh(centred.T @ centred / len(rows))
    eigenvalues = eigenvalues.clip(min=0)
    floored = eigenvalues.clip(min=0.01 * eigenvalues.mean())
    zca = (vectors / np.sqrt(floored)) @ vectors.T
    scale = np.sqrt((rows ** 2).sum(1).mean() / ((centred @ zca) ** 2).sum(1).mean())
    return lambda x: (x - mean) @ zca * scale


@torch.no_grad()
def oracle_scores(run, encoder, size, records, tokens):
    """Size-`size` scores (B, N + 1 + K) of the run's FULL model with the new items' rows appended:
    their text encoded by the tiny encoder itself, preprocessed with the run's statistics, projected
    by the full projection, plus a zero ID row."""
    from sentence_transformers import SentenceTransformer
    from datasets.item_text import item_text
    args, _, model = load_trained_run(run)
    raw = np.load(feature_cache_path(toy_dir(run), 'text', str(encoder)))
    raw = np.concatenate([np.zeros((1, raw.shape[1]), np.float32), raw])
    transform = numpy_preprocessing(raw, args.feature_preprocessing)
    # the numpy map is the one the run trained with
    assert np.allclose(transform(raw[1:]), model.item_features[1:].numpy(), atol=1e-5)
    texts = [item_text(record) for record in records]
    encoded = SentenceTransformer(str(encoder), device='cpu').encode(texts)
    encoded = encoded / np.linalg.norm(encoded, axis=1, keepdims=True)
    features = torch.from_numpy(transform(encoded.astype(np.float64))).float()
    new_rows = features @ model.projection.weight.T + model.projection.bias  # ID part: zero
    table = torch.cat([model.item_table(), new_rows])
    return model.scores(tokens, table)[SIZES.index(size)]


def toy_dir(run):
    from runs.run_folder import read_run_config
    return Path(read_run_config(run)['data_root']) / 'toy'


def histories_with_new_items(num_new):
    """Left-padded inputs: padding only, old items only, and histories holding the new items."""
    generator = torch.Generator().manual_seed(3)
    tokens = torch.zeros(6, MAX_LEN, dtype=torch.long)
    for row, length in enumerate([0, 1, 4, 9, 15, MAX_LEN]):
        if length:
            tokens[row, MAX_LEN - length:] = torch.randint(1, NUM_ITEMS + 1, (length,), generator=generator)
    tokens[2, -1] = NUM_ITEMS + 1
    tokens[3, -3:] = torch.tensor([NUM_ITEMS + num_new, 7, NUM_ITEMS + 2])
    tokens[5, 4] = NUM_ITEMS + 1
    return tokens


def assert_close(got, expected, rtol=1e-5):
    scale = expected.abs().max()
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=rtol, atol=rtol * scale), ((got - expected).abs().max(), scale)


# ---- the key test: added items score as the full model scores them ---------------------------------

@pytest.mark.parametrize('which, keep_features, size', [('hybrid', False, 16), ('hybrid', True, 32),
                                                        ('text', False, 8)])
def test_added_items_score_as_the_full_model_with_a_zero_id_row(request, tmp_path, tiny_sentence_encoder,  # noqa: F811
                                                                which, keep_features, size):
    run = request.getfixturevalue(f'{which}_run')
    path = export(run, tmp_path / 'model.pt', size, keep_features)
    before = load_export(path)
    tokens = histories_with_new_items(3)
    old_tokens = tokens.masked_fill(tokens > NUM_ITEMS, 5)  # histories of existing items only
    old_scores = before.model.scores(old_tokens, before.item_table)[-1]

    items = write_items(tmp_path / 'new_items.json.gz', NEW_ITEMS, gz=True)
    bundle = add(run, path, items)
    after = load_export(path)  # replaced in place
    assert after.info['item_input'] == ('features' if keep_features else 'table')
    assert after.model.num_items == NUM_ITEMS + 3 and after.item_table.shape == (NUM_ITEMS + 4, size)
    assert after.asins[-3:] == ['NEW000001', 'NEW000002', 'NEW000003'] and after.asins[:-3] == before.asins
    assert after.titles[-3:] == ['Demo item 999 (category 2, step 7)', 'A brand new item', None]
    assert [(r['item'], r['asin'], r['items_file']) for r in bundle['added_items']] == [
        (NUM_ITEMS + 1, 'NEW000001', 'new_items.json.gz'), (NUM_ITEMS + 2, 'NEW000002', 'new_items.json.gz'),
        (NUM_ITEMS + 3, 'NEW000003', 'new_items.json.gz')]

    got = after.model.scores(tokens, after.item_table)[-1]
    assert_close(got, oracle_scores(run, tiny_sentence_encoder, size, NEW_ITEMS, tokens))
    # the existing items keep their rows and their scores
    assert torch.equal(after.item_table[:NUM_ITEMS + 1], before.item_table)
    assert_close(after.model.scores(old_tokens, after.item_table)[-1][:, :NUM_ITEMS + 1], old_scores, rtol=1e-6)


def test_a_second_addition_continues_the_ids_and_the_record(hybrid_run, tmp_path, tiny_sentence_encoder):  # noqa: F811
    path = export(hybrid_run, tmp_path / 'model.pt', 16, keep_features=True)
    add(hybrid_run, path, write_items(tmp_path / 'first.json', NEW_ITEMS[:1]))
    out = tmp_path / 'elsewhere.pt'
    bundle = add(hybrid_run, path, write_items(tmp_path / 'second.json', NEW_ITEMS[1:]), '--out', str(out))
    assert [(r['item'], r['items_file']) for r in bundle['added_items']] == [
        (NUM_ITEMS + 1, 'first.json'), (NUM_ITEMS + 2, 'second.json'), (NUM_ITEMS + 3, 'second.json')]
    assert read_export(path)['num_items'] == NUM_ITEMS + 1  # --out leaves the input as it was
    after = load_export(out)
    tokens = histories_with_new_items(3)
    assert_close(after.model.scores(tokens, after.item_table)[-1],
                 oracle_scores(hybrid_run, tiny_sentence_encoder, 16, NEW_ITEMS, tokens))


def test_recommend_serves_an_added_item_with_its_asin_and_title(text_run, tmp_path, capsys, tiny_sentence_encoder):  # noqa: F811
    path = export(text_run, tmp_path / 'model.pt', 16)
    add(text_run, path, write_items(tmp_path / 'new.json', NEW_ITEMS))
    capsys.readouterr()
    recommend_script.main(['--model', str(path), '--history', 'NEW000001,DEMO000002', '--k', str(NUM_ITEMS + 3),
                           '--json'])
    records = json.loads(capsys.readouterr().out)['items']
    assert len(records) == NUM_ITEMS + 1  # every item but the two of the history
    added = next(r for r in records if r['asin'] == 'NEW000002')
    assert added['item'] == NUM_ITEMS + 2 and added['title'] == 'A brand new item'
    tokens = torch.zeros(1, MAX_LEN, dtype=torch.long)
    tokens[0, -2:] = torch.tensor([NUM_ITEMS + 1, 2])
    expected = oracle_scores(text_run, tiny_sentence_encoder, 16, NEW_ITEMS, tokens)[0, NUM_ITEMS + 2]
    assert added['score'] == pytest.approx(float(expected), rel=1e-5, abs=1e-6)


def test_recommend_boosts_the_added_items_only(hybrid_run, tmp_path, capsys):
    path = export(hybrid_run, tmp_path / 'model.pt', 16)
    add(hybrid_run, path, write_items(tmp_path / 'new.json', NEW_ITEMS))
    history, everything = 'DEMO000003,DEMO000007', str(NUM_ITEMS + 3)
    capsys.readouterr()

    def served(*extra):
        recommend_script.main(['--model', str(path), '--history', history, '--k', everything, '--json', *extra])
        return {r['item']: r['score'] for r in json.loads(capsys.readouterr().out)['items']}

    plain, boosted = served(), served('--new_item_boost', '2.5')
    added = {NUM_ITEMS + k for k in (1, 2, 3)}
    assert set(plain) == set(boosted) and added <= set(plain)
    for item, score in plain.items():
        assert boosted[item] == pytest.approx(score + (2.5 if item in added else 0.0), rel=1e-6, abs=1e-5)
    # an export without added items: the boost changes nothing, and says so
    bare = export(hybrid_run, tmp_path / 'bare.pt', 16)
    recommend_script.main(['--model', str(bare), '--history', history, '--new_item_boost', '1'])
    assert 'warning: --new_item_boost changes nothing' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        recommend_script.parse_recommend_args(['--model', str(bare), '--history', '1', '--new_item_boost', 'inf'])


# ---- refusals: one line each, and the export left as it was --------------------------------------

def assert_refused(run, export_path, items, pattern, *extra):
    kept = export_path.read_bytes()
    with pytest.raises(SystemExit) as stop:
        add(run, export_path, items, *extra)
    message = str(stop.value)
    assert message.startswith('error: ') and '\n' not in message, message
    assert pattern in message, message
    assert export_path.read_bytes() == kept


@pytest.mark.parametrize('records, pattern', [
    ([], 'holds no items'),
    ([{'title': 'no asin here'}], "line 1: no 'asin'"),
    ([NEW_ITEMS[0], {'asin': 'NEW000009'}, NEW_ITEMS[0]], 'ASIN NEW000001 is there twice (items 1 and 3'),
    ([NEW_ITEMS[1], {'asin': 'DEMO000005', 'title': 'again'}], 'model.pt (DEMO000005); an item is added once'),
    ([{'asin': 'NEW 1'}], 'holds a comma or white space'),
])
def test_bad_items_files_are_refused(text_run, tmp_path, records, pattern):
    path = export(text_run, tmp_path / 'model.pt', 8)
    assert_refused(text_run, path, write_items(tmp_path / 'items.json', records), pattern)


def test_an_export_of_another_run_is_refused(text_run, hybrid_run, tmp_path):
    path = export(text_run, tmp_path / 'model.pt', 16)
    items = write_items(tmp_path / 'items.json', NEW_ITEMS)
    assert_refused(hybrid_run, path, items, f'{path} is not an export of {hybrid_run}')
    bundle = read_export(path)
    bundle['asins'][5] = 'SOMETHING'  # the rows of this run, the catalogue of other data
    path.write_bytes(export_bytes(bundle))
    assert_refused(text_run, path, items, f'the ASINs of {path} are not those of the run')


def test_an_unloadable_encoder_is_one_line(text_run, tmp_path, monkeypatch):
    path = export(text_run, tmp_path / 'model.pt', 8)
    import sentence_transformers

    def offline(*args, **kwargs):
        raise OSError('We could not connect to the hub\nand a second line')
    monkeypatch.setattr(sentence_transformers, 'SentenceTransformer', offline)
    assert_refused(text_run, path, write_items(tmp_path / 'items.json', NEW_ITEMS),
                   'could not be loaded (OSError: We could not connect to the hub)')

    moved = tmp_path / 'run'
    shutil.copytree(text_run, moved)  # the same run, its encoder folder gone
    config = moved / 'args.yaml'
    encoder = read_export(path)['source']['text_encoder']
    config.write_text(config.read_text().replace(encoder, str(tmp_path / 'gone')))
    assert_refused(moved, path, write_items(tmp_path / 'items.json', NEW_ITEMS),
                   f"the run's text encoder cannot be loaded here: there is no folder {tmp_path / 'gone'}")


@pytest.mark.parametrize('extra, pattern', [
    (['--use_language_encoder', 'False', '--use_img_encoder', 'False'], 'is an ID-only run'),
    ([], 'uses image features'),
    (['--use_img_encoder', 'False'], 'synthetic demo'),
])
def test_runs_whose_new_items_have_no_row_are_refused(tmp_path, demo_root, extra, pattern):
    run = tmp_path / 'run'
    make_run(run, copy_demo(demo_root, tmp_path / 'data'), SIZES, extra)
    path = export(run, tmp_path / 'model.pt', 8)
    assert_refused(run, path, write_items(tmp_path / 'items.json', NEW_ITEMS), pattern)
