"""recommend.py: top-k of the exported model's scores, history excluded, ASINs or ids, batched,
text and JSON output, from an export file or from the run folder."""
import json

import pytest
import torch

import export as export_script
import recommend as recommend_script
from deploy.export_format import load_export
from fake_run import copy_demo, make_run
from deploy.recommender import HistoryError, Recommender

SIZE = 16
SIZE_INDEX = 2  # of [4, 8, 16, 32]


@pytest.fixture(scope='module')
def deployed(demo_root, tmp_path_factory):
    """(full model, export file, run folder) of a fake demo run."""
    root = tmp_path_factory.mktemp('recommend')
    run = root / 'run'
    full = make_run(run, copy_demo(demo_root, root / 'data'))
    out = root / f'model_{SIZE}.pt'
    export_script.main(['--export_root', str(run), '--size', str(SIZE), '--out', str(out)])
    return full, out, run


@pytest.fixture(scope='module')
def recommender(deployed):
    return Recommender(load_export(deployed[1]))


def full_scores(full, histories, max_len=50):
    """The full model's size-16 scores of the last position, as evaluation computes them."""
    tokens = torch.zeros(len(histories), max_len, dtype=torch.long)
    for row, history in enumerate(histories):
        tokens[row, max_len - len(history[-max_len:]):] = torch.tensor(history[-max_len:])
    return full.scores(tokens)[SIZE_INDEX]


def test_histories_accept_asins_and_ids(recommender):
    assert recommender.parse_history('DEMO000005,7 DEMO000300') == [5, 7, 300]
    with pytest.raises(HistoryError, match="'NOPE'"):
        recommender.parse_history('DEMO000005,NOPE')
    with pytest.raises(HistoryError, match='1..320'):
        recommender.parse_history('321')
    assert recommender.parse_history('NOPE,0,9', skip_unknown=True) == [9]


def test_top_k_are_the_best_unseen_items_by_the_full_models_scores(deployed, recommender):
    full = deployed[0]
    histories = [[5, 7, 300], [12], list(range(1, 80))]  # the last one is longer than max_len (50)
    items, values = recommender.top_k(histories, k=10)
    expected = full_scores(full, histories)
    for row, history in enumerate(histories):
        assert not set(items[row].tolist()) & set(history) and 0 not in items[row].tolist()
        assert torch.all(values[row][:-1] >= values[row][1:])
        assert torch.allclose(values[row], expected[row, items[row]], rtol=1e-5, atol=1e-5)
        allowed = expected[row].clone()
        allowed[0] = float('-inf')
        allowed[history] = float('-inf')  # the whole history, also beyond the last 50 inputs
        assert torch.allclose(values[row], allowed.topk(10).values, rtol=1e-5, atol=1e-5)


def test_include_history_ranks_every_real_item(deployed, recommender):
    histories = [[5, 7, 300]]
    items, _ = recommender.top_k(histories, k=320, exclude_history=False)
    assert sorted(items[0].tolist()) == list(range(1, 321))
    expected = full_scores(deployed[0], histories)[0, 1:].argmax() + 1
    assert items[0, 0] == expected


def test_batches_give_the_same_answer_as_one_by_one(recommender):
    generator = torch.Generator().manual_seed(3)
    histories = [torch.randint(1, 321, (int(n),), generator=generator).tolist()
                 for n in torch.randint(1, 30, (23,), generator=generator)]
    items, values = recommender.top_k(histories, k=5, batch_size=7)
    for row, history in enumerate(histories):
        one_items, one_values = recommender.top_k([history], k=5)
        assert torch.equal(items[row], one_items[0])
        assert torch.allclose(values[row], one_values[0], atol=1e-5)


def test_json_output_from_a_file_of_users(deployed, tmp_path, capsys):
    users = tmp_path / 'users.txt'
    users.write_text('alice\tDEMO000005,DEMO000007\n12 13 14\n\n')  # a blank line at the end is no user
    records = recommend_script.main(['--model', str(deployed[1]), '--history_file', str(users), '--k', '4', '--json'])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 == len(records)
    alice, second = json.loads(lines[0]), json.loads(lines[1])
    assert alice['user'] == 'alice' and second['user'] == 'line 2'  # the input's labels, in input order
    first = alice['items']
    assert len(first) == 4 and set(first[0]) == {'item', 'asin', 'score', 'title'}
    assert first[0]['asin'] == f'DEMO{first[0]["item"]:06d}' and first[0]['title'].startswith('Demo item')
    assert [r['score'] for r in first] == sorted((r['score'] for r in first), reverse=True)
    assert not {r['item'] for r in second['items']} & {12, 13, 14}


def test_text_output_and_the_run_folder_agree_with_the_file(deployed, capsys):
    _, path, run = deployed
    threads = torch.get_num_threads()
    from_file = recommend_script.main(['--model', str(path), '--history', 'DEMO000005,9', '--k', '3',
                                       '--threads', str(threads + 1)])
    assert torch.get_num_threads() == threads  # main() leaves the process's torch settings alone
    text = capsys.readouterr().out
    assert 'history (2 history items)' in text and '1. DEMO' in text and 'Demo item' in text
    from_run = recommend_script.main(['--export_root', str(run), '--size', str(SIZE), '--history', 'DEMO000005,9',
                                      '--k', '3'])
    assert [r['item'] for r in from_run[0]] == [r['item'] for r in from_file[0]]


def test_dataset_without_metadata_gives_null_titles(demo_root, tmp_path, capsys):
    run = tmp_path / 'run'
    make_run(run, copy_demo(demo_root, tmp_path / 'data', with_meta=False))
    out = tmp_path / 'model_8.pt'
    export_script.main(['--export_root', str(run), '--size', '8', '--out', str(out)])
    capsys.readouterr()
    recommend_script.main(['--model', str(out), '--history', '3,4', '--k', '2', '--json'])
    records = json.loads(capsys.readouterr().out)['items']
    assert [r['title'] for r in records] == [None, None] and records[0]['asin'].startswith('DEMO')


def test_user_errors_are_clear(deployed):
    _, path, run = deployed
    with pytest.raises(SystemExit, match="'NOPE'.*--skip_unknown"):
        recommend_script.main(['--model', str(path), '--history', 'NOPE'])
    with pytest.raises(SystemExit, match='4,8,16,32'):
        recommend_script.main(['--export_root', str(run), '--size', '64', '--history', '3'])
    with pytest.raises(SystemExit, match='not (a readable|an) fMRLRec export'):
        recommend_script.main(['--model', str(run / 'models' / 'best_acc_model.pth'), '--history', '3'])
    with pytest.raises(SystemExit):  # argparse: neither --model nor --export_root
        recommend_script.main(['--history', '3'])
