"""Command-line wiring of the serving scripts that only these tests pin: `export.py --size all` writes
every nested size (the largest included) and nothing else, and `recommend.py --include_history`
really lets the user's own items back into the ranking."""
import json

import torch

import export as export_script
import recommend as recommend_script
from deploy.export_format import load_export
from tests.fake_run import SIZES, copy_demo, make_run

SIZE = 16


def test_export_all_writes_exactly_every_size_each_scoring_like_the_full_model(tmp_path, demo_root):
    run = tmp_path / 'run'
    full = make_run(run, copy_demo(demo_root, tmp_path / 'data'))
    written = export_script.main(['--export_root', str(run), '--size', 'all', '--out', str(tmp_path / 'all')])
    assert sorted(p.name for p in (tmp_path / 'all').iterdir()) == sorted(f'model_{s}.pt' for s in SIZES)
    assert [p.name for p in written] == [f'model_{s}.pt' for s in SIZES]  # the largest size too
    tokens = torch.randint(1, full.num_items + 1, (4, 50), generator=torch.Generator().manual_seed(0))
    expected = full.scores(tokens)
    for index, size in enumerate(SIZES):
        exported = load_export(tmp_path / 'all' / f'model_{size}.pt')
        assert exported.info['size'] == size
        got = exported.model.scores(tokens, exported.item_table)[-1]
        assert torch.allclose(got, expected[index], rtol=1e-5, atol=1e-5 * expected[index].abs().max())


def test_include_history_on_the_command_line_lets_history_items_back(tmp_path, demo_root, capsys):
    run = tmp_path / 'run'
    make_run(run, copy_demo(demo_root, tmp_path / 'data'))
    model = tmp_path / f'model_{SIZE}.pt'
    export_script.main(['--export_root', str(run), '--size', str(SIZE), '--out', str(model)])
    capsys.readouterr()  # the export's own report
    users = tmp_path / 'users.txt'
    histories = [[item] for item in range(1, 41)]
    users.write_text(''.join(f'{h[0]}\n' for h in histories))
    k = 160  # half the demo's 320 items: some history items are surely among the top k
    exported = load_export(model)
    tokens = torch.zeros(len(histories), exported.max_len, dtype=torch.long)
    tokens[:, -1] = torch.tensor([h[0] for h in histories])
    scores = exported.model.scores(tokens, exported.item_table)[-1][:, 1:]  # real items only
    expected = (scores.topk(k).indices + 1).tolist()
    assert any(h[0] in top for h, top in zip(histories, expected))  # else the check below could not fail
    def served(*extra):
        recommend_script.main(['--model', str(model), '--history_file', str(users), '--k', str(k), '--json', *extra])
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    with_history, without = served('--include_history'), served()
    assert len(with_history) == len(without) == len(histories)
    for record, top in zip(with_history, expected):
        assert {r['item'] for r in record['items']} == set(top)
    for record, history in zip(without, histories):
        assert history[0] not in {r['item'] for r in record['items']}
