"""Export: the size-s file holds only the slice, reloads without the run or the data, and scores
exactly like the full model's size-s output, for every size."""
import pytest
import torch

import eval as eval_script
import export as export_script
from deploy.catalogue import Catalogue
from deploy.export_format import (ExportError, build_export, export_bytes, load_export, parameter_total, read_export,
                                  serialized_size)
from fake_run import copy_demo, make_run, randomise
from model import FMRLRec
from model.slicing import SizeError, parameter_count, slice_model, sliced_state_dict

SIZES = [4, 8, 16, 32]
NUM_ITEMS = 40
MAX_LEN = 12


def make_model(features=True, num_blocks=2, bias=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    text = image = None
    if features:
        text, image = torch.randn(NUM_ITEMS + 1, 10, generator=generator), torch.randn(NUM_ITEMS + 1, 6, generator=generator)
        text[0], image[0] = 0, 0
    model = FMRLRec(NUM_ITEMS, SIZES, text, image, num_blocks=num_blocks, dropout=0.3, attn_dropout=0.3, bias=bias)
    return randomise(model, seed)


def catalogue():
    return Catalogue([''] + [f'ASIN{i:03d}' for i in range(1, NUM_ITEMS + 1)], None)


def input_batch():
    """Left-padded inputs: an empty history (padding only), short ones, and a full window."""
    generator = torch.Generator().manual_seed(1)
    tokens = torch.zeros(5, MAX_LEN, dtype=torch.long)
    for row, length in enumerate([0, 1, 3, 7, MAX_LEN]):
        if length:
            tokens[row, MAX_LEN - length:] = torch.randint(1, NUM_ITEMS + 1, (length,), generator=generator)
    return tokens


def assert_scores_match(full, exported, size):
    tokens = input_batch()
    k = SIZES.index(size)
    expected = full.eval().scores(tokens)[k]
    got = exported.model.scores(tokens, exported.item_table)[-1]
    assert got.shape == expected.shape == (len(tokens), NUM_ITEMS + 1)
    scale = expected.abs().max()
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * scale), (size, (got - expected).abs().max(), scale)


@pytest.mark.parametrize('keep_features', [False, True])
def test_every_size_scores_like_the_full_model(tmp_path, keep_features):
    full = make_model()
    for size in SIZES:
        path = tmp_path / f'model_{size}.pt'
        path.write_bytes(export_bytes(build_export(full, size, catalogue(), MAX_LEN, keep_features)))
        exported = load_export(path)
        assert exported.size == size and exported.item_table.shape == (NUM_ITEMS + 1, size)
        assert not exported.model.training
        assert_scores_match(full, exported, size)
        # The padding row of a feature model's table is the projection's bias, not zero.
        assert torch.allclose(exported.item_table[0], full.projection.bias[:size], atol=1e-6)


def test_id_only_model_exports_exactly(tmp_path):
    full = make_model(features=False, num_blocks=1, bias=False)
    for size in SIZES:
        path = tmp_path / f'id_{size}.pt'
        path.write_bytes(export_bytes(build_export(full, size, catalogue(), MAX_LEN)))
        assert_scores_match(full, load_export(path), size)


def test_slice_is_the_size_s_model_and_holds_only_its_weights():
    full = make_model()
    for k, size in enumerate(SIZES, start=1):
        small = slice_model(full, size)
        assert small.sizes == SIZES[:k]
        assert sum(p.numel() for p in small.parameters()) == parameter_count(SIZES[:k], 2, feature_dim=16)
        state = sliced_state_dict(full, size)
        assert state['projection.weight'].shape == (size, 16)
        assert state['blocks.1.lru.params_log'].shape == (3, size)
        assert not any(name.endswith(f'.weight.{k}') for name in state)  # chunk k (0-based) is not there
        assert torch.equal(state[f'blocks.0.lru.in_proj.weight_imag.{k - 1}'], full.blocks[0].lru.in_proj.weight_imag[k - 1])
        assert torch.equal(state[f'blocks.1.post_norm.norms.{k - 1}.weight'], full.blocks[1].post_norm.norms[k - 1].weight)


def test_export_file_holds_no_hidden_full_size_storage(tmp_path):
    full = make_model()
    sizes_on_disk = []
    for size in SIZES:
        bundle = build_export(full, size, catalogue(), MAX_LEN)
        assert not any(name.startswith('projection.') for name in bundle['state_dict'])
        assert bundle['state_dict']['id_embedding.weight'].shape == (NUM_ITEMS + 1, size)
        path = tmp_path / f'm{size}.pt'
        path.write_bytes(export_bytes(bundle))
        assert path.stat().st_size == serialized_size(bundle)
        for name, tensor in read_export(path)['state_dict'].items():
            # a saved view would drag the full tensor's storage along
            assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size(), name
        assert parameter_total(bundle) == (parameter_count(SIZES[:SIZES.index(size) + 1], 2, feature_dim=16)
                                           - 17 * size + (NUM_ITEMS + 1) * size)  # projection -> table
        sizes_on_disk.append(path.stat().st_size)
    assert sizes_on_disk == sorted(sizes_on_disk) and sizes_on_disk[0] < sizes_on_disk[-1]


def test_a_size_outside_the_run_is_a_clear_error(tmp_path, demo_root):
    full = make_model()
    with pytest.raises(SizeError, match='4,8,16,32'):
        build_export(full, 12, catalogue(), MAX_LEN)
    run = tmp_path / 'run'
    make_run(run, copy_demo(demo_root, tmp_path / 'data'))
    for bad in ('12', '64', 'big'):
        with pytest.raises(SystemExit, match='4,8,16,32|integer'):
            export_script.main(['--export_root', str(run), '--size', bad])


def test_reading_something_else_is_a_clear_error(tmp_path, demo_root):
    with pytest.raises(ExportError, match='does not exist'):
        read_export(tmp_path / 'missing.pt')
    run = tmp_path / 'run'
    make_run(run, copy_demo(demo_root, tmp_path / 'data'))
    with pytest.raises(ExportError, match='not'):
        read_export(run / 'models' / 'best_acc_model.pth')
    (tmp_path / 'junk.pt').write_bytes(b'not a zip')
    with pytest.raises(ExportError, match='not a readable'):
        read_export(tmp_path / 'junk.pt')


@pytest.mark.parametrize('keep_features', [False, True])
def test_cli_export_loads_without_the_run_or_the_data(tmp_path, demo_root, keep_features):
    data_root, run = copy_demo(demo_root, tmp_path / 'data'), tmp_path / 'run'
    full = make_run(run, data_root)
    out = tmp_path / 'deploy' / 'model_16.pt'
    export_script.main(['--export_root', str(run), '--size', '16', '--out', str(out)]
                       + (['--keep_features'] if keep_features else []))
    tokens = torch.randint(1, full.num_items + 1, (6, 50), generator=torch.Generator().manual_seed(2))
    expected = full.scores(tokens)[2]
    for folder in (data_root, run):
        for path in sorted(folder.rglob('*'), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    exported = load_export(out)
    assert exported.info['item_input'] == ('features' if keep_features else 'table')
    got = exported.model.scores(tokens, exported.item_table)[-1]
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max())
    assert exported.asins[1] == 'DEMO000001' and exported.titles[1].startswith('Demo item 1 ')
    assert exported.info['metrics'] == {'Recall@10': pytest.approx(0.12), 'NDCG@10': pytest.approx(0.07)}
    assert exported.max_len == 50 and exported.info['source']['dataset_code'] == 'demo'


def test_eval_summary_lists_parameters_and_export_sizes(tmp_path, demo_root, capsys):
    run = tmp_path / 'run'
    full = make_run(run, copy_demo(demo_root, tmp_path / 'data'))
    eval_script.main(['--export_root', str(run), '--eval_mode', 'summary'])
    summary = (run / 'size_summary.md').read_text()
    assert 'size_summary.md' in capsys.readouterr().out
    rows = [line for line in summary.splitlines() if line.startswith('| ') and line[2].isdigit()]
    assert [int(r.split('|')[1]) for r in rows] == SIZES
    written = export_script.main(['--export_root', str(run), '--size', 'all'])
    for row, size, path in zip(rows, SIZES, written):
        cells = [c.strip() for c in row.split('|')[1:-1]]
        assert cells[1] == f'{sum(t.numel() for t in sliced_state_dict(full, size).values()):,}'
        assert cells[2] == f'{path.stat().st_size / 1e6:.3f} MB'
        assert cells[3] == f'{0.1 + 0.01 * SIZES.index(size):.4f}'  # Recall@10 from test_mrl_metrics.json
