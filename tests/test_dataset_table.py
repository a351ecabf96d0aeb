"""scripts/dataset_table.py: the nine rows' commands, when a row is finished, and the report's numbers."""
import argparse
import csv
import json

import pytest
import yaml

from config import parse_args
from scripts import dataset_table


def options(tmp_path):
    return argparse.Namespace(out=str(tmp_path / 'table'), data_root='DATA', language_encoder='ENCODER')


def test_the_nine_rows_share_one_configuration_and_differ_only_in_dataset_and_items(tmp_path):
    assert sorted(dataset_table.ROWS) == sorted(f'{c}_{k}' for c in dataset_table.DATASETS
                                                for k in dataset_table.REPRESENTATIONS)
    parsed = {name: parse_args(dataset_table.train_argv(name, options(tmp_path))) for name in dataset_table.ROWS}
    for name, args in parsed.items():
        code, kind = dataset_table.split_row(name)
        assert args.dataset_code == code and args.mrl_hidden_sizes == [8, 16, 32, 64, 128, 256]
        assert (args.lr, args.lru_dropout, args.lru_attn_dropout, args.num_epochs) == (3e-3, 0.1, 0.1, 10)
        assert args.resume == 'auto' and args.export_root == str(tmp_path / 'table' / name)
        assert not args.use_img_encoder and args.use_language_encoder == (kind != 'id')
        assert args.item_id_embedding == (kind == 'hybrid')
        assert args.feature_preprocessing == ('none' if kind == 'id' else 'whiten')
        if kind != 'id':
            assert args.feature_dir == str(tmp_path / 'features' / code)
    # the dataset's preset still sets what the configuration leaves alone (r_min differs per dataset)
    assert parsed['beauty_id'].lru_r_min != parsed['sports_id'].lru_r_min
    command = dataset_table.row_command('clothing_text', options(tmp_path))[-1]
    folder = tmp_path / 'table' / 'clothing_text'
    assert f"eval.py --export_root {folder} --mask_history True && " in command
    assert command.endswith(f"eval.py --export_root {folder} --ties last")  # text rows: the ties' bound
    assert '--ties' not in dataset_table.row_command('clothing_hybrid', options(tmp_path))[-1]


def fake_row(folder, ndcg, masked=True, curve=(0.01, 0.03, 0.02), ties_last=None):
    (folder / 'logs').mkdir(parents=True)
    (folder / 'args.yaml').write_text(yaml.safe_dump({'mrl_hidden_sizes': [8, 256]}))
    with open(folder / 'logs' / 'logs.csv', 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['epoch', 'train_loss', 'seconds', 'val_NDCG@10'])
        writer.writerows([epoch, 30.0 - epoch, 120.0, value] for epoch, value in enumerate(curve, start=1))
    metrics = {'8': {'NDCG@10': ndcg / 4, 'Recall@10': 0.01}, '256': {'NDCG@10': ndcg, 'Recall@10': 2 * ndcg}}
    (folder / 'test_mrl_metrics.json').write_text(json.dumps(metrics))
    if masked:
        metrics['256']['NDCG@10'] = ndcg * 1.1
        (folder / dataset_table.MASKED_FILE).write_text(json.dumps(metrics))
    if ties_last is not None:
        metrics['256']['NDCG@10'] = ties_last
        (folder / dataset_table.TIES_LAST_FILE).write_text(json.dumps(metrics))
    report = {'buckets': {'0': [0, 0], '1-4': [1, 4]}, 'users': {'0': 3, '1-4': 7},
              'by_size': {'256': {'0': {'NDCG@10': 0.125, 'Recall@10': 0.25},
                                  '1-4': {'NDCG@10': ndcg, 'Recall@10': 0.5}}}}
    (folder / 'test_mrl_metrics_by_popularity.json').write_text(json.dumps(report))


def test_a_row_is_finished_only_with_both_protocols_and_the_report_compares_with_id(tmp_path, capsys):
    out = tmp_path / 'table'
    fake_row(out / 'clothing_id', 0.0080)
    fake_row(out / 'clothing_text', 0.0200, masked=False, ties_last=0.0150)
    fake_row(out / 'clothing_hybrid', 0.0300)  # masked, but a text row would also need the ties' file
    assert dataset_table.is_finished(out / 'clothing_id') and not dataset_table.is_finished(out / 'clothing_text')
    assert dataset_table.is_finished(out / 'clothing_hybrid')
    fake_row(out / 'beauty_text', 0.0300)
    assert not dataset_table.is_finished(out / 'beauty_text')
    assert dataset_table.main(['report', '--out', str(out)]) == 0
    table = (out / 'table.md').read_text()
    assert '| id | 0.0080 | 0.0160 | 1.00x | 0.0088 | 0.0160 | – | – | 3 (2) | 6 |' in table
    assert '| text | 0.0200 | 0.0400 | 2.50x | – | – | 0.0150 | 0.0400 | 3 (2), running | 6 |' in table
    assert '| hybrid | 0.0300 |' in table and '| id | not started |' in table and '| paper fMRLRec, text + image, D = 1024 (Table 2) | 0.0259 |' in table
    assert '| 8 | 0.0075 | 0.0020 | 0.0050 | 0.0075 |' in table and '| 3 | 0.0200 | 0.0200 | 0.0200 | 0.0200 |' in table
    masked = table.split('at every size (history masked):')[1]  # the rows tested masked, masked numbers
    assert '| size | beauty_text | clothing_id | clothing_hybrid |' in masked and '| 256 | 0.0330 | 0.0088 | 0.0330 |' in masked
    assert '| clothing_id | 0.1250 | 0.2500 | 0.0080 | 0.5000 |' in table  # per bucket, finished rows only
    assert 'clothing_text | 0.1250' not in table
    results = json.loads((out / 'table.json').read_text())
    assert [r['row'] for r in results] == ['beauty_text', 'clothing_id', 'clothing_text', 'clothing_hybrid']


def test_report_without_any_row_is_one_clear_line(tmp_path):
    with pytest.raises(SystemExit, match='no row has started'):
        dataset_table.main(['report', '--out', str(tmp_path)])


def test_each_datasets_bucket_table_names_its_own_user_counts():
    from scripts.study_rows import popularity_markdown

    def report(users, ndcg):
        cell = {'NDCG@10': ndcg, 'Recall@10': 2 * ndcg}
        return {'buckets': ['0', '1-4'], 'users': {'0': users, '1-4': 10 * users},
                'by_size': {'8': {'0': cell, '1-4': cell}, '256': {'0': cell, '1-4': cell}}}
    by_popularity = {'beauty_id': report(141, 0.01), 'clothing_id': report(331, 0.02)}
    clothing = popularity_markdown(['clothing_id'], by_popularity)
    assert clothing.splitlines()[0] == '| row | NDCG@10 0 (331 users) | Recall@10 0 | NDCG@10 1-4 (3,310 users) | Recall@10 1-4 |'
    assert clothing.splitlines()[2] == '| clothing_id | 0.0200 | 0.0400 | 0.0200 | 0.0400 |'
