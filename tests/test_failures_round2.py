"""Failures outside train.py that must be one clear line, not a traceback or a misleading hint:
Ctrl-C in eval.py, export.py and recommend.py; the feature builders without their input files;
datamaps ids with gaps; a truncated export; a bad value in a --config file; the demo regenerating
only what is missing; and a text feature table whose rows would all be the same (docs/resume.md)."""
import gzip
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch

import eval as eval_script
import export as export_script
import recommend as recommend_script
import train as train_script
from config import parse_args
from datasets import text_features
from datasets.demo import DEMO_ENCODER, demo_files, ensure_demo, generate
from datasets.feature_builds import ensure_feature_tables
from datasets.features import FeatureTableError, feature_cache_path, load_feature_table, save_feature_table
from datasets.image_features import main as image_main
from datasets.p5 import DataError, load_p5
from datasets.text_features import DegenerateTableError, build_text_features
from datasets.text_features import main as text_main
from deploy.recommender import Recommender
from fake_run import copy_demo, make_run
from runs.run_folder import BEST_CHECKPOINT, STATE_DICT_KEY
from tests.test_features_build import make_p5_folder, tiny_sentence_encoder  # noqa: F401 (a fixture)

INTERRUPTED = 130


@pytest.fixture(scope='module')
def run_and_export(demo_root, tmp_path_factory):
    """(a fake run of the demo, its size-8 export)."""
    root = tmp_path_factory.mktemp('round2')
    run = root / 'run'
    make_run(run, copy_demo(demo_root, root / 'data'))
    export_script.main(['--export_root', str(run), '--size', '8', '--out', str(root / 'model_8.pt')])
    return run, root / 'model_8.pt'


def interrupt(*_, **__):
    raise KeyboardInterrupt


def stopped(script, argv):
    with pytest.raises(SystemExit) as stop:
        script.main([str(a) for a in argv])
    return stop.value.code


# ---- Ctrl-C: one line and status 130, as train.py --------------------------------------------

def test_ctrl_c_in_eval_is_one_line_and_keeps_the_metrics(run_and_export, monkeypatch, capsys):
    run, _ = run_and_export
    before = (run / 'test_mrl_metrics.json').read_text()
    monkeypatch.setattr(eval_script, 'evaluate_best_checkpoint', interrupt)
    assert stopped(eval_script, ['--export_root', run]) == INTERRUPTED
    assert capsys.readouterr().err.splitlines()[-1] == (
        'interrupted (Ctrl-C); every file eval.py writes is replaced whole, so the run being tested keeps its '
        'earlier metrics files, if any. Run the same command again to finish.')
    assert (run / 'test_mrl_metrics.json').read_text() == before


def test_ctrl_c_in_export_names_the_complete_files(run_and_export, monkeypatch, tmp_path, capsys):
    run, _ = run_and_export
    real_export, calls = export_script.export_run, []

    def second_size_interrupted(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_export(*args, **kwargs)
    monkeypatch.setattr(export_script, 'export_run', second_size_interrupted)
    assert stopped(export_script, ['--export_root', run, '--size', 'all', '--out', tmp_path]) == INTERRUPTED
    assert capsys.readouterr().err.splitlines()[-1] == (
        f'interrupted (Ctrl-C); {tmp_path / "model_4.pt"} is complete, and no file is left in part (each is written '
        f'whole, then renamed into place). Run the same command again.')
    assert [p.name for p in tmp_path.iterdir()] == ['model_4.pt']
    assert torch.load(tmp_path / 'model_4.pt', weights_only=True)['size'] == 4


def test_ctrl_c_in_recommend_is_one_line(run_and_export, monkeypatch, capsys):
    _, model = run_and_export
    monkeypatch.setattr(Recommender, 'top_k', interrupt)
    assert stopped(recommend_script, ['--model', model, '--history', '3']) == INTERRUPTED
    out, err = capsys.readouterr()
    assert out == '' and err.splitlines() == [
        'interrupted (Ctrl-C); recommend.py writes nothing but its output, and the recommendations not printed yet '
        'are lost. Run the same command again.']


# ---- the feature builders without their input files ------------------------------------------

def test_image_features_without_the_photo_map_is_one_line(tmp_path, capsys):
    data_dir = make_p5_folder(tmp_path)
    (data_dir / 'item2img_dict.pkl').unlink()
    assert image_main(['--data_dir', str(data_dir), '--img_encoder', str(tmp_path / 'unused'), '--no_progress']) == 1
    assert capsys.readouterr().err == (
        f'error: {data_dir / "item2img_dict.pkl"} is missing: it maps ASINs to photo files. Build it with python -m '
        f'datasets.prepare (see docs/data.md) or train without images.\n')
    (data_dir / 'item2img_dict.pkl').write_bytes(b'\x80\x04not a pickle')
    assert image_main(['--data_dir', str(data_dir), '--no_progress']) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'error: {data_dir / "item2img_dict.pkl"} cannot be read (') and err.count('\n') == 1


@pytest.mark.parametrize('builder', [text_main, image_main], ids=['text', 'image'])
def test_a_builder_on_a_folder_without_datamaps_is_one_line(tmp_path, capsys, builder):
    assert builder(['--data_dir', str(tmp_path), '--no_progress']) == 1
    assert capsys.readouterr().err == (
        f'error: {tmp_path / "datamaps.json"} is missing (the id maps of the dataset). Put the P5 files in '
        f'{tmp_path}/ (see docs/data.md) or use --dataset_code demo.\n')


def test_ids_with_gaps_name_the_missing_ids_and_the_fix(demo_root, tmp_path, capsys):
    data_dir = copy_demo(demo_root, tmp_path / 'data') / 'demo'
    maps = json.loads((data_dir / 'datamaps.json').read_text())
    maps['item2id']['DEMO000007'] = '321'  # id 7 is gone, 321 is new
    (data_dir / 'datamaps.json').write_text(json.dumps(maps))
    expected = (f'{data_dir / "datamaps.json"}: item ids are not 1..321 without gaps (7 missing); the sequences and '
                f'feature tables index items by those ids. Rebuild the file with `python -m datasets.prepare` (which '
                f'numbers the items 1..N), or restore it from the P5 release.')
    with pytest.raises(DataError) as refused:
        load_p5(data_dir)
    assert str(refused.value) == expected
    assert text_main(['--data_dir', str(data_dir), '--no_progress']) == 1
    assert capsys.readouterr().err == f'error: {expected}\n'


# ---- the demo regenerates only what is missing ------------------------------------------------

def test_deleting_a_demo_table_regenerates_that_file_alone(tmp_path, capsys):
    data_dir = tmp_path / 'demo'
    generate(data_dir, seed=0)
    files = demo_files(data_dir)
    text_table = files['text'].read_bytes()
    long_ago = 1_000_000_000
    for path in data_dir.rglob('*'):
        os.utime(path, (long_ago, long_ago))
    files['text'].unlink()
    files['meta'].unlink()  # optional: deleted on purpose, it stays deleted
    ensure_demo(data_dir)
    assert capsys.readouterr().err == (
        f"Generating the synthetic demo's missing files in {data_dir}: features/text_{DEMO_ENCODER}.npy\n")
    assert files['text'].read_bytes() == text_table  # the file the whole demo holds
    rewritten = sorted(p.name for p in data_dir.rglob('*') if p.is_file() and p.stat().st_mtime != long_ago)
    assert rewritten == [f'text_{DEMO_ENCODER}.json', f'text_{DEMO_ENCODER}.npy'] and not files['meta'].exists()


def test_the_advice_for_a_broken_demo_table_works(demo_root, tmp_path):
    """'delete the file and rerun train.py' on a demo table with NaN: the rerun has the demo's own table."""
    data_dir = copy_demo(demo_root, tmp_path / 'data') / 'demo'
    path = feature_cache_path(data_dir, 'text', DEMO_ENCODER)
    good = load_feature_table(path, 320, DEMO_ENCODER)
    table = np.load(path)
    table[4, 3] = np.nan
    np.save(path, table)
    with pytest.raises(FeatureTableError, match=r'delete the file and rerun train.py'):
        load_feature_table(path, 320, DEMO_ENCODER)
    sequences = (data_dir / 'sequential_data.txt').stat().st_mtime_ns
    path.unlink()
    ensure_demo(data_dir)
    assert torch.equal(load_feature_table(path, 320, DEMO_ENCODER), good)
    assert (data_dir / 'sequential_data.txt').stat().st_mtime_ns == sequences


# ---- export files --------------------------------------------------------------------------

def test_a_truncated_export_is_not_called_a_training_checkpoint(run_and_export, tmp_path):
    run, model = run_and_export
    truncated = tmp_path / 'cut.pt'
    truncated.write_bytes(model.read_bytes()[:model.stat().st_size // 2])
    message = stopped(recommend_script, ['--model', truncated, '--history', '3'])
    assert message.startswith(f'error: {truncated} is truncated or damaged ({truncated.stat().st_size:,} bytes; ')
    assert 'training checkpoint' not in message and message.endswith(
        f'copy it again, or write it again with `python export.py --export_root RUN --size S --out {truncated}`.')

    checkpoint = tmp_path / 'checkpoint.pth'  # what train.py writes: weights and the random states
    weights = torch.load(run / 'models' / BEST_CHECKPOINT, weights_only=False)[STATE_DICT_KEY]
    torch.save({STATE_DICT_KEY: weights, 'rng_states': {'numpy': np.random.get_state()}}, checkpoint)
    message = stopped(recommend_script, ['--model', checkpoint, '--history', '3'])
    assert message == (f'error: {checkpoint} is not an fMRLRec export: it holds Python objects beyond tensors and '
                       f'plain values. A training checkpoint is not an export: cut one with `python export.py '
                       f'--export_root RUN --size S --out {checkpoint}`, or serve the run folder with `python '
                       f'recommend.py --export_root RUN --size S`.')


# ---- a bad value in a --config file names the file -------------------------------------------

@pytest.mark.parametrize('text, message', [
    ('lr: -1\n', '--lr must be a finite number > 0.0, got -1.0'),
    ('lr: fast\n', "argument --lr: invalid float value: 'fast'"),
    ('mrl_hidden_sizes: [16, 8]\n', '--mrl_hidden_sizes must be strictly increasing, got 16 then 8'),
    ('missing_image: skip\n', "argument --missing_image: invalid choice: 'skip'"),
])
def test_a_bad_value_in_a_config_file_names_the_file(tmp_path, capsys, text, message):
    config = tmp_path / 'bad.yaml'
    config.write_text(text)
    with pytest.raises(SystemExit) as stop:
        parse_args(['--config', str(config)])
    assert stop.value.code == 2 and f'error: --config {config}: {message}' in capsys.readouterr().err


def test_train_py_names_the_config_file_and_the_command_line_wins(tmp_path, capsys):
    config = tmp_path / 'bad.yaml'
    config.write_text('lr: -1\n')
    with pytest.raises(SystemExit) as stop:
        train_script.main(['--config', str(config), '--export_root', str(tmp_path / 'run')])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f'error: --config {config}: --lr must be a finite number' in err
    with pytest.raises(SystemExit):
        parse_args(['--config', str(config), '--lr', '-2'])  # the bad value is the command line's, not the file's
    err = capsys.readouterr().err
    assert 'error: --lr must be a finite number > 0.0, got -2.0' in err and str(config) not in err
    assert not (tmp_path / 'run').exists()


# ---- a text feature table that cannot tell items apart ----------------------------------------

@pytest.fixture
def demo_copy(demo_root, tmp_path):
    """The demo's files as a dataset 'toy' whose text features are built (the demo's are shipped)."""
    data_root = tmp_path / 'data'
    shutil.copytree(demo_root / 'demo', data_root / 'toy')
    return data_root / 'toy'


def test_missing_metadata_never_builds_or_caches_a_table_of_identical_rows(demo_copy, tiny_sentence_encoder,  # noqa: F811
                                                                          tmp_path, capsys):
    encoder = str(tiny_sentence_encoder)
    meta = demo_copy / 'meta.json.gz'
    kept = meta.read_bytes()
    meta.unlink()
    path = feature_cache_path(demo_copy, 'text', encoder)
    expected = (f'the text features of {demo_copy} cannot be built: 320 of 320 items (100%) have the same text, '
                f"'Untitled Item', because {meta} is missing. A table whose rows are nearly all the same cannot tell "
                f'items apart, so none is built or cached (the limit is 90% of the items). Restore {meta} '
                f'(docs/data.md), or train without text features (--no-use_language_encoder).')
    with pytest.raises(DegenerateTableError) as refused:
        build_text_features(demo_copy, encoder, progress=False)
    assert str(refused.value) == expected and not path.exists()
    assert text_main(['--data_dir', str(demo_copy), '--language_encoder', encoder, '--no_progress']) == 1
    assert capsys.readouterr().err == f'error: {expected}\n' and not path.exists()

    # train.py: one line, nothing cached, no run folder
    with pytest.raises(SystemExit) as stop:
        train_script.main(['--dataset_code', 'toy', '--data_root', str(demo_copy.parent), '--language_encoder', encoder,
                           '--use_img_encoder', 'False', '--export_root', str(tmp_path / 'run')])
    assert str(stop.value) == f'error: {path} does not exist, and {expected}'
    assert not path.exists() and not (tmp_path / 'run').exists()

    # the metadata restored: a table that tells the items apart
    meta.write_bytes(kept)
    table = ensure_feature_tables(demo_copy, 320, use_text=True, use_image=False, language_encoder=encoder,
                                  img_encoder='unused')['text']
    assert len(torch.unique(table[1:], dim=0)) == 320


def test_a_cached_table_of_identical_rows_is_rebuilt_never_reused(demo_copy, tiny_sentence_encoder, capsys):  # noqa: F811
    encoder = str(tiny_sentence_encoder)
    path = feature_cache_path(demo_copy, 'text', encoder)
    untitled = np.tile(np.linspace(-1, 1, 32, dtype=np.float32), (320, 1))
    untitled[:, 0] += np.random.default_rng(0).normal(scale=1e-7, size=320).astype(np.float32)  # batch rounding
    save_feature_table(path, untitled, encoder)  # as a build without metadata cached it before this check
    kwargs = dict(use_text=True, use_image=False, language_encoder=encoder, img_encoder='unused')
    meta = demo_copy / 'meta.json.gz'
    kept = meta.read_bytes()
    meta.unlink()
    with pytest.raises(FeatureTableError, match=f'^{re.escape(str(path))} gives 320 of its 320 items the same row .*, '
                                                f'and the text features of {re.escape(str(demo_copy))} cannot be built: '
                                                f'320 of 320 items'):
        ensure_feature_tables(demo_copy, 320, **kwargs)
    assert np.array_equal(np.load(path), untitled)  # left as it is
    meta.write_bytes(kept)
    table = ensure_feature_tables(demo_copy, 320, **kwargs)['text']
    assert f'{path} gives 320 of its 320 items the same row (built without item metadata?)' in capsys.readouterr().out
    assert len(torch.unique(table[1:], dim=0)) == 320


def test_mostly_missing_metadata_is_named_and_a_minority_warned(demo_copy, tiny_sentence_encoder, capsys):  # noqa: F811
    encoder = str(tiny_sentence_encoder)
    meta = demo_copy / 'meta.json.gz'
    with gzip.open(meta, 'rt') as handle:
        lines = handle.readlines()
    with gzip.open(meta, 'wt') as handle:
        handle.writelines(lines[:20])
    with pytest.raises(DegenerateTableError, match=r"300 of 320 items \(94%\) have the same text, 'Untitled Item', "
                                                   f'because only 20 of the 320 items have a line in {re.escape(str(meta))}'):
        build_text_features(demo_copy, encoder, progress=False)
    with gzip.open(meta, 'wt') as handle:
        handle.writelines(lines[:100])
    build_text_features(demo_copy, encoder, progress=False)  # 69% alike: built, and said
    assert ("warning: text features: 220 of 320 items (69%) have the same text, 'Untitled Item', because only 100 of "
            f'the 320 items have a line in {meta}; a text-only model cannot tell those items apart.'
            in capsys.readouterr().out)


def test_an_encoder_that_gives_every_text_one_vector_is_refused(demo_copy, monkeypatch):
    monkeypatch.setattr(text_features, 'encode_texts', lambda texts, *a, **k: np.ones((len(texts), 8), np.float32))
    with pytest.raises(DegenerateTableError, match='the encoder enc gives 320 of 320 items the same vector although '
                                                   'their texts differ, so no table is cached'):
        build_text_features(demo_copy, 'enc', progress=False)
    assert not feature_cache_path(demo_copy, 'text', 'enc').exists()
