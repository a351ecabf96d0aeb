"""A run folder that knows its inputs: train.py records the dataset, every feature table and the
preprocessing in RUN/inputs.json, and eval.py, export.py, recommend.py and train.py --resume stop with
one line when what they load differs (docs/resume.md, "Inputs")."""
import json
import shutil

import numpy as np
import pytest

import eval as eval_script
import export as export_script
import recommend as recommend_script
import train as train_script
from datasets import feature_preprocessing, text_features
from datasets.demo import DEMO_ENCODER
from datasets.features import feature_cache_path, load_feature_table, save_feature_table, table_sha256
from fake_run import copy_demo, make_run
from runs.run_folder import (INPUTS_FILE, read_accepted_input_changes, read_inputs_record, read_test_metrics,
                             recent_checkpoint_path)

TEXT_FILE = f'text_{DEMO_ENCODER}.npy'


@pytest.fixture(scope='module')
def trained(demo_root, tmp_path_factory):
    """(run folder, data root) of a one-epoch demo run on whitened features."""
    root = tmp_path_factory.mktemp('fingerprint')
    data_root = copy_demo(demo_root, root / 'data')
    run = root / 'run'
    train_script.main(['--dataset_code', 'demo', '--data_root', str(data_root), '--export_root', str(run),
                       '--mrl_hidden_sizes', '4,8', '--num_epochs', '1', '--feature_preprocessing', 'whiten',
                       '--no-use_tensorboard'])
    return run, data_root


def private_copy(trained, tmp_path):
    """A copy of the trained run and of its data, which a test may change."""
    run, data_root = trained
    shutil.copytree(run, tmp_path / 'run')
    shutil.copytree(data_root, tmp_path / 'data')
    return tmp_path / 'run', tmp_path / 'data'


def table_path(data_root, modality='text'):
    return feature_cache_path(data_root / 'demo', modality, DEMO_ENCODER)


def change_table(path, how):
    """Rewrite a demo table as the issue describes: rows permuted, a few rows edited, or rebuilt by
    another version of the same encoder (same name, slightly other numbers)."""
    table = np.load(path)
    rng = np.random.default_rng(0)
    if how == 'permuted':
        table = table[rng.permutation(len(table))]
    elif how == 'edited':
        table = table.copy()
        table[[3, 100, 200]] += 0.01
    else:
        table = (table + 1e-3 * rng.normal(size=table.shape)).astype(np.float32)
    save_feature_table(path, table, DEMO_ENCODER)


def eval_argv(run, data_root, *extra):
    return ['--export_root', str(run), '--data_root', str(data_root), '--force', '--device', 'cpu', *extra]


def one_line_error(stop):
    message = str(stop.value.code)
    assert message.startswith('error: ') and '\n' not in message, message
    return message


def test_training_records_what_the_run_was_trained_on(trained):
    run, data_root = trained
    record = read_inputs_record(run)
    dataset = record['dataset']
    assert (dataset['dataset_code'], dataset['num_items'], dataset['num_users']) == ('demo', 320, 1200)
    assert len(dataset['sequences_sha256']) == 64 and len(dataset['id_maps_sha256']) == 64
    for modality, dim in (('text', 64), ('image', 48)):
        path = table_path(data_root, modality)
        expected = {'encoder': DEMO_ENCODER, 'file': path.name, 'shape': [320, dim],
                    'sha256': table_sha256(load_feature_table(path, 320))}
        if modality == 'text':
            expected['text_fields'] = 'all'
        assert record['features'][modality] == expected
    assert record['preprocessing']['method'] == 'whiten' and set(record['preprocessing']) == {'method', 'text', 'image'}
    assert record['preprocessing']['text']['sum_of_squares'] > 0


@pytest.mark.parametrize('how', ['permuted', 'edited', 'rebuilt'])
def test_eval_stops_when_a_feature_table_changed(trained, tmp_path, how):
    run, data_root = private_copy(trained, tmp_path)
    metrics_before = (run / 'test_mrl_metrics.json').read_bytes()
    change_table(table_path(data_root), how)
    with pytest.raises(SystemExit) as stop:
        eval_script.main(eval_argv(run, data_root))
    message = one_line_error(stop)
    assert f'was trained on other inputs: text features ({TEXT_FILE}): content differs' in message
    assert '--accept_changed_inputs' in message and 'image' not in message
    assert (run / 'test_mrl_metrics.json').read_bytes() == metrics_before


def test_eval_stops_when_the_preprocessing_statistics_differ(trained, tmp_path, monkeypatch):
    run, data_root = private_copy(trained, tmp_path)
    monkeypatch.setattr(feature_preprocessing, 'EIGENVALUE_FLOOR', 0.2)  # what a code change of whiten would do
    with pytest.raises(SystemExit) as stop:
        eval_script.main(eval_argv(run, data_root))
    message = one_line_error(stop)
    assert ('text features: --feature_preprocessing whiten statistics differ; '
            'image features: --feature_preprocessing whiten statistics differ') in message


def test_accepting_changed_inputs_is_said_and_kept_in_the_metrics_files(trained, tmp_path, capsys):
    run, data_root = private_copy(trained, tmp_path)
    change_table(table_path(data_root), 'permuted')
    capsys.readouterr()
    by_size = eval_script.main(eval_argv(run, data_root, '--accept_changed_inputs'))
    warnings = [line for line in capsys.readouterr().err.splitlines() if '--accept_changed_inputs' in line]
    assert len(warnings) == 1 and warnings[0].startswith('warning: ') and 'content differs' in warnings[0]
    accepted = read_accepted_input_changes(run)
    assert len(accepted) == 1 and accepted[0].startswith(f'text features ({TEXT_FILE}): content differs')
    assert read_test_metrics(run) == by_size  # the readers see the sizes only
    for name in ('test_metrics.json', 'test_mrl_metrics_by_popularity.json'):
        assert json.loads((run / name).read_text())['accepted_input_changes'] == accepted
    # Accepting once changes nothing in the run's record: the next command stops again.
    with pytest.raises(SystemExit, match='content differs'):
        eval_script.main(eval_argv(run, data_root))


def re_prepared(data_dir, other_dir):
    """`data_dir` as `prepare` might make it again: the last item gone (and users left too short), the
    last user gone, and the old feature cache copied along."""
    shutil.copytree(data_dir, other_dir)
    maps = json.loads((other_dir / 'datamaps.json').read_text())
    last = str(len(maps['id2item']))
    del maps['item2id'][maps['id2item'].pop(last)]
    (other_dir / 'datamaps.json').write_text(json.dumps(maps))
    lines = []
    for line in (other_dir / 'sequential_data.txt').read_text().splitlines()[:-1]:
        user, *items = line.split()
        items = [item for item in items if item != last]
        if len(items) >= 3:
            lines.append(' '.join([user, *items]))
    (other_dir / 'sequential_data.txt').write_text('\n'.join(lines) + '\n')


def test_a_re_prepared_dataset_stops_before_its_feature_cache_is_touched(demo_root, tmp_path, monkeypatch, capsys):
    # A real dataset code (not the demo), whose cache train.py would build: the encoder is a folder that
    # exists, and the builder fails the test if anything calls it.
    encoder = tmp_path / 'encoder'
    encoder.mkdir()
    data_root = tmp_path / 'data'
    shutil.copytree(demo_root / 'demo', data_root / 'toy')
    demo_text = np.load(feature_cache_path(data_root / 'toy', 'text', DEMO_ENCODER))
    save_feature_table(feature_cache_path(data_root / 'toy', 'text', str(encoder)), demo_text, str(encoder))
    run = tmp_path / 'run'
    make_run(run, data_root, extra_args=['--dataset_code', 'toy', '--language_encoder', str(encoder),
                                         '--use_img_encoder', 'False'])
    other = tmp_path / 'other'
    re_prepared(data_root / 'toy', other / 'toy')
    cache = feature_cache_path(other / 'toy', 'text', str(encoder))
    cache_bytes = {path: path.read_bytes() for path in (cache, cache.with_suffix('.json'))}
    monkeypatch.setattr(text_features, 'build_text_features', lambda *_, **__: pytest.fail('eval built a table'))
    metrics_before = (run / 'test_mrl_metrics.json').read_bytes()

    with pytest.raises(SystemExit) as stop:
        eval_script.main(eval_argv(run, other))
    assert ('was trained on other inputs: dataset: items 320 -> 319, users 1200 -> 1199, interactions '
            in one_line_error(stop))
    assert 'sequences differ, id maps differ' in str(stop.value.code)

    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # accepting the dataset never lets eval rebuild the cache
        eval_script.main(eval_argv(run, other, '--accept_changed_inputs'))
    message = one_line_error(stop)
    assert 'has shape (320, 64) but the dataset has 319 items' in message and 'never builds or replaces' in message
    assert 'warning: --accept_changed_inputs' in capsys.readouterr().err
    assert {path: path.read_bytes() for path in cache_bytes} == cache_bytes
    assert (run / 'test_mrl_metrics.json').read_bytes() == metrics_before


def test_an_old_run_folder_warns_once_and_works(trained, tmp_path, capsys):
    run, data_root = private_copy(trained, tmp_path)
    trained_metrics = read_test_metrics(run)
    capsys.readouterr()
    assert eval_script.main(eval_argv(run, data_root)) == trained_metrics  # the same data in another folder
    assert 'warning' not in capsys.readouterr().err

    (run / INPUTS_FILE).unlink()
    assert eval_script.main(eval_argv(run, data_root)) == trained_metrics
    warnings = [line for line in capsys.readouterr().err.splitlines() if INPUTS_FILE in line]
    assert len(warnings) == 1 and warnings[0].startswith(f'warning: {run} has no {INPUTS_FILE}')
    export_script.main(['--export_root', str(run), '--size', '4', '--data_root', str(data_root),
                        '--out', str(tmp_path / 'model_4.pt')])
    assert sum(INPUTS_FILE in line for line in capsys.readouterr().err.splitlines()) == 1
    assert not (run / INPUTS_FILE).exists()  # only training writes the record


def test_export_and_recommend_stop_on_changed_inputs(trained, tmp_path):
    run, data_root = private_copy(trained, tmp_path)
    change_table(table_path(data_root, 'image'), 'edited')
    commands = [(export_script, ['--export_root', str(run), '--size', '4', '--data_root', str(data_root)]),
                (recommend_script, ['--export_root', str(run), '--size', '4', '--data_root', str(data_root),
                                    '--history', '1,2,3'])]
    for script, argv in commands:
        with pytest.raises(SystemExit) as stop:
            script.main(argv)
        assert f'image features (image_{DEMO_ENCODER}.npy): content differs' in one_line_error(stop)
    assert not (run / 'exports').exists()
    assert len(recommend_script.main(commands[1][1] + ['--accept_changed_inputs'])) == 1


def test_resume_on_changed_inputs_stops(trained, tmp_path):
    run, data_root = private_copy(trained, tmp_path)
    change_table(table_path(data_root), 'edited')
    before = {path: path.read_bytes() for path in (recent_checkpoint_path(run), run / INPUTS_FILE)}
    with pytest.raises(SystemExit) as stop:
        train_script.main(['--resume', str(run), '--data_root', str(data_root)])
    assert f'text features ({TEXT_FILE}): content differs' in one_line_error(stop)
    assert {path: path.read_bytes() for path in before} == before


def test_resume_accepting_changed_inputs_records_them(trained, tmp_path, capsys):
    run, data_root = private_copy(trained, tmp_path)
    change_table(table_path(data_root), 'edited')
    capsys.readouterr()
    train_script.main(['--resume', str(run), '--data_root', str(data_root), '--accept_changed_inputs'])
    assert 'warning: --accept_changed_inputs' in capsys.readouterr().err
    record = read_inputs_record(run)
    assert record['features']['text']['sha256'] == table_sha256(load_feature_table(table_path(data_root), 320))
    assert len(record['accepted_changes']) == 1 and 'content differs' in record['accepted_changes'][0]
    assert read_accepted_input_changes(run) == record['accepted_changes']
    assert 'accept_changed_inputs' not in (run / 'args.yaml').read_text()  # a later resume must say it again

    eval_script.main(eval_argv(run, data_root))  # the inputs it now trains on pass, and the history stays said
    assert 'resumed on changed inputs before' in capsys.readouterr().err
    assert read_accepted_input_changes(run) == record['accepted_changes']


def test_accepting_is_refused_where_there_is_nothing_to_compare(demo_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:  # a new run: no record yet
        train_script.main(['--dataset_code', 'demo', '--data_root', str(demo_root), '--export_root',
                           str(tmp_path / 'run'), '--accept_changed_inputs'])
    assert '--accept_changed_inputs goes with --resume' in one_line_error(stop)
    assert not (tmp_path / 'run').exists()
    with pytest.raises(SystemExit) as stop:  # an export file holds its own item table
        recommend_script.main(['--model', str(tmp_path / 'model.pt'), '--history', '1', '--accept_changed_inputs'])
    assert stop.value.code == 2 and '--accept_changed_inputs goes with --export_root' in capsys.readouterr().err
