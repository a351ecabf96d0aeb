"""Item text template, text/image feature builders and the train-time cache check, with tiny
models built here (no download)."""
import gzip
import json
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.feature_builds import ensure_feature_tables
from datasets.features import feature_cache_path, save_feature_table
from datasets.image_features import (MissingImagesError, build_image_features, encode_images,
                                     load_image_encoder, pooled_image_features)
from datasets.image_features import main as image_main
from datasets.item_text import item_text
from datasets.text_features import dataset_item_texts
from datasets.text_features import main as text_main

ITEM_META = {  # item id -> metadata (None: no line in meta.json.gz)
    1: {'asin': 'A1', 'title': 'Soap &amp; Water', 'price': 12.99, 'brand': 'Acme',
        'categories': [['Beauty', 'Skin Care', 'Face'], ['Gifts']], 'imUrl': 'http://x/1.jpg'},
    2: {'asin': 'A2', 'title': 'Comb'},
    3: None,
    4: {'asin': 'A4', 'brand': 'Acme', 'categories': []},
    5: {'asin': 'A5', 'categories': [['Beauty']]},
    6: {'asin': 'A6', 'price': 5},
}
EXPECTED_TEXTS = [
    'Title: Soap &amp; Water\nPrice: 12.99\nBrand: Acme\nCategories: Beauty, Skin Care, Face',
    'Title: Comb',
    'Untitled Item',
    'Brand: Acme',
    'Categories: Beauty',
    'Price: 5',
]
COLOURS = {1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255), 4: (200, 200, 0), 5: (0, 90, 200), 6: (9, 9, 9)}


@pytest.mark.parametrize('meta, text', [
    (ITEM_META[1], EXPECTED_TEXTS[0]),
    (None, 'Untitled Item'),
    ({}, 'Untitled Item'),
    ({'asin': 'X', 'imUrl': 'http://x', 'description': 'ignored'}, 'Untitled Item'),
    ({'title': '', 'categories': []}, 'Untitled Item'),  # empty attributes do not exist
    ({'title': '  Padded  ', 'brand': 'B '}, 'Title: Padded\nBrand: B'),
    ({'price': 5.0}, 'Price: 5.0'),
    ({'price': 0.99, 'title': 'T'}, 'Title: T\nPrice: 0.99'),  # template order, not dict order
    ({'categories': ['Beauty', 'Hair']}, 'Categories: Beauty, Hair'),  # a flat list
    ({'categories': [['Beauty', 'Hair', 'Dryers']]}, 'Categories: Beauty, Hair, Dryers'),
    ({'title': 'L&#39;Oreal &quot;Paris&quot;'}, 'Title: L&#39;Oreal &quot;Paris&quot;'),  # raw entities
])
def test_item_text_template(meta, text):
    assert item_text(meta) == text


def make_p5_folder(root, *, broken=True):
    """Six items; with `broken`, item 3's photo file is missing, item 4's does not decode and item 5
    has no item2img entry."""
    data_dir = root / 'toy'
    data_dir.mkdir(parents=True)
    asins = {i: f'A{i}' for i in ITEM_META}
    (data_dir / 'datamaps.json').write_text(json.dumps({
        'user2id': {'U1': '1'}, 'item2id': {a: str(i) for i, a in asins.items()},
        'id2user': {'1': 'U1'}, 'id2item': {str(i): a for i, a in asins.items()}}))
    (data_dir / 'sequential_data.txt').write_text('1 1 2 3 4 5 6\n')
    with gzip.open(data_dir / 'meta.json.gz', 'wt') as handle:
        handle.writelines(repr(m) + '\n' for m in ITEM_META.values() if m)
    photos = root / 'photos' / 'toy'
    photos.mkdir(parents=True)
    item2img = {}
    for i, asin in asins.items():
        if broken and i == 5:
            continue
        item2img[asin] = f'toy/{asin}.png'
        if broken and i == 3:
            continue
        if broken and i == 4:
            (photos / f'{asin}.png').write_bytes(b'<html>not an image</html>')
            continue
        Image.new('RGB', (20 + 3 * i, 24), COLOURS[i]).save(photos / f'{asin}.png')
    (data_dir / 'item2img_dict.pkl').write_bytes(pickle.dumps(item2img))
    return data_dir


@pytest.fixture(scope='session')
def tiny_sentence_encoder(tmp_path_factory):
    """A randomly initialised 32-d BERT sentence-transformers model saved to a folder."""
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel
    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers before 6
        from sentence_transformers.models import Pooling, Transformer
    bert = tmp_path_factory.mktemp('tiny_bert')
    chars = 'abcdefghijklmnopqrstuvwxyz0123456789'
    vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + list(chars + ':.,&;') + [f'##{c}' for c in chars]
    (bert / 'vocab.txt').write_text('\n'.join(vocab) + '\n')
    (bert / 'tokenizer_config.json').write_text(json.dumps(
        {'tokenizer_class': 'BertTokenizer', 'do_lower_case': True, 'model_max_length': 128}))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=128)).save_pretrained(bert)
    folder = tmp_path_factory.mktemp('tiny_sentence_encoder')
    SentenceTransformer(modules=[Transformer(str(bert)), Pooling(32)], device='cpu').save(str(folder))
    return folder


@pytest.fixture(scope='session')
def tiny_siglip(tmp_path_factory):
    """A randomly initialised SiglipModel (16-d image embeddings) and its image processor."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel
    folder = tmp_path_factory.mktemp('tiny_siglip')
    torch.manual_seed(0)
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = SiglipConfig(text_config=dict(small, vocab_size=64, max_position_embeddings=16),
                          vision_config=dict(small, image_size=32, patch_size=8))
    SiglipModel(config).save_pretrained(folder)
    SiglipImageProcessor(size={'height': 32, 'width': 32}).save_pretrained(folder)
    return folder


def test_dataset_item_texts_in_id_order_with_field_counts(tmp_path):
    texts, counts = dataset_item_texts(make_p5_folder(tmp_path))
    assert texts == EXPECTED_TEXTS
    assert counts == {'Title': 2, 'Price': 2, 'Brand': 2, 'Categories': 2, 'with metadata': 5, 'untitled': 1}


def test_text_features_command(tmp_path, tiny_sentence_encoder):
    from sentence_transformers import SentenceTransformer
    data_dir = make_p5_folder(tmp_path)
    out = tmp_path / 'feats' / 'text.npy'
    assert text_main(['--data_dir', str(data_dir), '--language_encoder', str(tiny_sentence_encoder),
                      '--out', str(out), '--batch_size', '4', '--no_progress']) == 0
    table = np.load(out)
    assert table.shape == (6, 32) and table.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0, atol=1e-5)
    direct = SentenceTransformer(str(tiny_sentence_encoder), device='cpu').encode(EXPECTED_TEXTS)
    direct /= np.linalg.norm(direct, axis=1, keepdims=True)
    np.testing.assert_allclose(table, direct, atol=1e-5)  # row i-1 is item i's text
    assert json.loads(out.with_suffix('.json').read_text()) == {
        'encoder': str(tiny_sentence_encoder), 'num_items': 6, 'dim': 32, 'text_fields': 'all'}


def test_image_features_zero_policy_streams_batches(tmp_path, tiny_siglip, capsys):
    data_dir = make_p5_folder(tmp_path)
    path, info = build_image_features(data_dir, str(tiny_siglip), image_root=tmp_path / 'photos',
                                      batch_size=2, progress=False)
    assert path == feature_cache_path(data_dir, 'image', str(tiny_siglip))
    table = np.load(path)
    assert table.shape == (6, 16) and info['missing'] == 3
    assert not table[[2, 3, 4]].any()  # items 3, 4, 5: zero rows
    np.testing.assert_allclose(np.linalg.norm(table[[0, 1, 5]], axis=1), 1.0, atol=1e-5)
    assert '3 of 6 items have no usable photo' in capsys.readouterr().out
    listed = path.with_suffix('.missing.tsv').read_text().splitlines()[1:]
    assert [line.split('\t')[0] for line in listed] == ['3', '4', '5']

    model, processor = load_image_encoder(str(tiny_siglip))
    pixels = processor(images=[Image.open(tmp_path / 'photos/toy/A1.png').convert('RGB')], return_tensors='pt')
    with torch.no_grad():
        expected = pooled_image_features(model.get_image_features(**pixels))[0]
    np.testing.assert_allclose(table[0], (expected / expected.norm()).numpy(), atol=1e-5)

    seen = []

    def recording_processor(images, **kwargs):
        seen.append(len(images))
        return processor(images=images, **kwargs)
    paths = [tmp_path / f'photos/toy/A{i}.png' for i in (1, 2, 6, 1, 2)]
    streamed, missing = encode_images(paths, model, recording_processor, batch_size=2, progress=False)
    assert seen == [2, 2, 1] and missing == []  # never more than one batch of images at a time
    np.testing.assert_allclose(streamed[:3], table[[0, 1, 5]], atol=1e-5)  # batch size does not matter


def test_image_features_error_policy(tmp_path, tiny_siglip, capsys):
    data_dir = make_p5_folder(tmp_path)
    with pytest.raises(MissingImagesError) as raised:
        build_image_features(data_dir, str(tiny_siglip), image_root=tmp_path / 'photos', missing_image='error',
                             progress=False)
    assert [i for i, _ in raised.value.missing] == [2, 4]  # absent files are found before any encoding
    assert 'item 3 (A3)' in str(raised.value) and 'item 5 (A5)' in str(raised.value)
    assert not feature_cache_path(data_dir, 'image', str(tiny_siglip)).exists()
    assert image_main(['--data_dir', str(data_dir), '--img_encoder', str(tiny_siglip), '--image_root',
                       str(tmp_path / 'photos'), '--missing_image', 'error', '--no_progress']) == 1
    assert 'item 3 (A3)' in capsys.readouterr().err


def test_image_features_error_policy_catches_undecodable_file(tmp_path, tiny_siglip):
    data_dir = make_p5_folder(tmp_path, broken=False)
    (tmp_path / 'photos/toy/A4.png').write_bytes(b'GIF89a truncated')
    with pytest.raises(MissingImagesError, match=r'item 4 \(A4\).*does not decode'):
        build_image_features(data_dir, str(tiny_siglip), image_root=tmp_path / 'photos', missing_image='error',
                             progress=False)


def test_no_readable_photo_at_all_is_an_error(tmp_path, tiny_siglip):
    data_dir = make_p5_folder(tmp_path)
    with pytest.raises(MissingImagesError, match='check --image_root'):
        build_image_features(data_dir, str(tiny_siglip), image_root=tmp_path / 'nowhere', progress=False)


def test_pooled_image_features_handles_transformers_4_and_5():
    embedding = torch.ones(2, 3)
    assert pooled_image_features(embedding) is embedding  # 4.x: a tensor
    assert pooled_image_features(SimpleNamespace(pooler_output=embedding)) is embedding  # 5.x: an output
    with pytest.raises(TypeError):
        pooled_image_features(SimpleNamespace(last_hidden_state=embedding))


def test_ensure_feature_tables_builds_reuses_and_rebuilds(tmp_path, tiny_sentence_encoder, tiny_siglip,
                                                          capsys, monkeypatch):
    data_dir = make_p5_folder(tmp_path)
    encoder = str(tiny_sentence_encoder)
    kwargs = dict(use_text=True, use_image=False, language_encoder=encoder, img_encoder='unused')
    built = ensure_feature_tables(data_dir, 6, **kwargs)
    assert built['image'] is None and built['text'].shape == (7, 32)
    assert not built['text'][0].any() and 'does not exist' in capsys.readouterr().out

    import datasets.text_features as text_features
    real_builder = text_features.build_text_features
    monkeypatch.setattr(text_features, 'build_text_features', lambda *a, **k: pytest.fail('rebuilt a good cache'))
    again = ensure_feature_tables(data_dir, 6, **kwargs)
    assert torch.equal(again['text'], built['text']) and 'using the cache' in capsys.readouterr().out
    monkeypatch.setattr(text_features, 'build_text_features', real_builder)

    path = feature_cache_path(data_dir, 'text', encoder)
    for wrong, reason in [((np.ones((5, 32)), encoder), 'has shape (5, 32)'),
                          ((np.ones((6, 32)), 'another/encoder'), "built by encoder 'another/encoder'")]:
        save_feature_table(path, *wrong)
        rebuilt = ensure_feature_tables(data_dir, 6, **kwargs)
        assert reason in capsys.readouterr().out
        assert torch.allclose(rebuilt['text'], built['text'], atol=1e-6)

    with pytest.raises(ValueError, match='has 6 items but the dataset has 7'):  # datamaps/sequences mismatch
        ensure_feature_tables(data_dir, 7, **kwargs)

    images = ensure_feature_tables(data_dir, 6, use_text=False, use_image=True, language_encoder=encoder,
                                   img_encoder=str(tiny_siglip), batch_size=4, image_root=tmp_path / 'photos')
    assert images['text'] is None and images['image'].shape == (7, 16)
    assert not images['image'][[0, 3, 4, 5]].any() and images['image'][[1, 2, 6]].norm(dim=1).allclose(torch.ones(3))
