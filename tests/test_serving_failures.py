"""eval.py, export.py and recommend.py outside the validated path: non-finite scores are never turned
into metrics or recommendations, and every refusal is one line that leaves the files already written alone."""
import json

import pytest
import torch

import eval as eval_script
import export as export_script
import recommend as recommend_script
from evaluation.evaluate import metrics_from_ranks
from evaluation.metrics import UNRANKED, NonFiniteScoresError, exact_ranks, target_ranks
from fake_run import copy_demo, make_run
from runs.run_folder import BEST_CHECKPOINT, STATE_DICT_KEY

BROKEN = 'blocks.0.feed_forward.w_1.weight.3'  # the last chunk: only size 32 (of 4, 8, 16, 32) reads it


def refused(script, *argv):
    with pytest.raises(SystemExit) as stop:
        script.main([str(a) for a in argv])
    return stop.value.code


@pytest.fixture(scope='module')
def runs(demo_root, tmp_path_factory):
    """(a good fake run, the same run with NaN in a weight only size 32 uses, its export of size 16)."""
    root = tmp_path_factory.mktemp('serving')
    data = copy_demo(demo_root, root / 'data')
    good, broken = root / 'good', root / 'broken'
    make_run(good, data)
    make_run(broken, data)
    path = broken / 'models' / BEST_CHECKPOINT
    checkpoint = torch.load(path, weights_only=False)
    checkpoint[STATE_DICT_KEY][BROKEN][0, 0] = float('nan')
    torch.save(checkpoint, path)
    export_script.main(['--export_root', str(good), '--size', '16', '--out', str(root / 'model_16.pt')])
    return good, broken, root / 'model_16.pt'


def test_nan_scores_are_unranked_never_first():
    scores = torch.tensor([[0.0, 0.9, float('nan'), 0.5], [0.0, 0.2, 0.9, 0.1], [float('-inf'), 0.3, 0.1, float('inf')]])
    ranks = target_ranks(scores, torch.tensor([2, 1, 1]))
    assert ranks[:, 0].tolist() == [UNRANKED, 2, UNRANKED]  # -inf (a masked item) is fine, NaN and +inf are not
    with pytest.raises(NonFiniteScoresError, match=r'^the scores are NaN or infinite at size 16 \(2 of 3 users\)$'):
        metrics_from_ranks(torch.stack([exact_ranks(torch.tensor([1, 2, 3])), ranks]), [8, 16], [5])


def test_eval_refuses_nan_scores_naming_the_size(runs):
    _, broken, _ = runs
    metrics = broken / 'test_mrl_metrics.json'
    before = metrics.read_text()
    message = refused(eval_script, '--export_root', broken)
    assert message == (f'error: {broken / "models" / BEST_CHECKPOINT}: the scores are NaN or infinite at size 32 '
                       f'(1200 of 1200 users); its weights hold NaN or infinite values ({BROKEN}). No metric was '
                       f'computed from them and no metrics file was written. Test a checkpoint with finite weights, '
                       f'or retrain (a lower --lr or --max_grad_norm).')
    assert metrics.read_text() == before and not (broken / 'size_summary.md').exists()


def test_export_and_recommend_refuse_non_finite_weights(runs, tmp_path):
    _, broken, _ = runs
    message = refused(export_script, '--export_root', broken, '--size', '32', '--out', tmp_path / 'm.pt')
    assert message == (f'error: {broken / "models" / BEST_CHECKPOINT}: the size-32 model holds NaN or infinite values '
                       f'({BROKEN}), so it cannot rank items. Export a checkpoint with finite weights (python eval.py '
                       f'--export_root RUN stops on one without).')
    assert not (tmp_path / 'm.pt').exists()
    export_script.main(['--export_root', str(broken), '--size', '16', '--out', str(tmp_path / 'm16.pt')])  # finite slice
    message = refused(recommend_script, '--export_root', broken, '--size', '32', '--history', '3')
    assert message.startswith(f'error: {broken / "models" / BEST_CHECKPOINT}: the size-32 model holds NaN')
    bundle = torch.load(tmp_path / 'm16.pt', weights_only=True)
    bundle['state_dict']['id_embedding.weight'][5, 0] = float('inf')
    torch.save(bundle, tmp_path / 'm16.pt')
    message = refused(recommend_script, '--model', tmp_path / 'm16.pt', '--history', '3')
    assert message.startswith(f'error: {tmp_path / "m16.pt"}: the size-16 model holds NaN or infinite values '
                              f'(id_embedding.weight), so it cannot rank items.')


def test_export_out_as_a_folder_is_refused(runs, tmp_path):
    good, _, _ = runs
    (tmp_path / 'keep.txt').write_text('mine')
    message = refused(export_script, '--export_root', good, '--size', '16', '--out', tmp_path)
    assert message == (f'error: --out {tmp_path} is a folder; give a file name such as {tmp_path / "model_16.pt"} '
                       f'(--size all writes into a folder)')
    assert [p.name for p in tmp_path.iterdir()] == ['keep.txt']


@pytest.mark.parametrize('lines, message', [
    ('alice\tDEMO000005\n\nbob\t7\n', '{file}, line 2: blank line. Each line is one user (and --json writes one line '
                                      "per user, in order); remove it, or put that user's items there."),
    ('alice\tDEMO000005\nbob\t\n', '{file}, line 2 (bob): no history items; give at least one ASIN or item id per '
                                   'user (the model has nothing else to go on)'),
])
def test_history_files_that_would_misalign_the_output(runs, tmp_path, lines, message):
    users = tmp_path / 'users.txt'
    users.write_text(lines)
    assert refused(recommend_script, '--model', runs[2], '--history_file', users, '--json') == \
        'error: ' + message.format(file=users)


def test_an_empty_history_is_refused(runs):
    assert refused(recommend_script, '--model', runs[2], '--history', ' ') == (
        'error: --history (history): no history items; give at least one ASIN or item id per user (the model has '
        'nothing else to go on)')


def test_what_the_model_cannot_do_is_said(runs, tmp_path, capsys):
    users = tmp_path / 'users.txt'
    users.write_text('long\t' + ' '.join(str(i) for i in range(1, 61)) + '\nlost\tNOPE\n7\n')
    records = recommend_script.main(['--model', str(runs[2]), '--history_file', str(users), '--k', '300',
                                     '--skip_unknown', '--json'])
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        'note: 1 user(s) have no item this model knows (lost); --skip_unknown dropped them all, so they get an empty list',
        'note: 1 user(s) have more history items than the model reads (50, its --lru_max_len): their last 50 are '
        'used, and all of them are excluded from the ranking',
        'note: 1 user(s) get fewer than --k 300 items: the catalogue has 320 items, less the history items excluded '
        'from the ranking']
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line['user'] for line in lines] == ['long', 'lost', 'line 3']
    assert [len(r) for r in records] == [260, 0, 300] and lines[1]['items'] == []


def test_eval_with_a_truncated_meta_file_is_one_line(demo_root, tmp_path):
    run, data = tmp_path / 'run', copy_demo(demo_root, tmp_path / 'data')
    make_run(run, data)
    meta = data / 'demo' / 'meta.json.gz'
    meta.write_bytes(meta.read_bytes()[:-40])
    before = (run / 'test_mrl_metrics.json').read_text()
    message = refused(eval_script, '--export_root', run)
    assert message.startswith(f'error: {meta}: cannot be read after line ') and 'not a complete gzip file' in message
    assert (run / 'test_mrl_metrics.json').read_text() == before


@pytest.mark.parametrize('script, argv', [
    (eval_script, ['--export_root', '{good}']),
    (recommend_script, ['--model', '{model}', '--history', '3']),
])
def test_a_wrong_device_is_one_line(runs, script, argv):
    good, _, model = runs
    argv = [a.format(good=good, model=model) for a in argv]
    assert refused(script, *argv, '--device', 'gpu') == (
        'error: --device gpu is not a device: use auto (a GPU when there is one, else the CPU), cpu, cuda or cuda:N')
