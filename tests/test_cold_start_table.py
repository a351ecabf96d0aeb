"""scripts/cold_start_table.py: each row is the three-dataset table's row plus the protocol and its remedy,
and the report's numbers (the held-out users, the ratios, the never-a-target users that were in training)."""
import argparse
import csv
import json

from config import parse_args
from scripts import cold_start_table, dataset_table


def options(tmp_path):
    return argparse.Namespace(out=str(tmp_path / 'cold'), data_root='DATA', language_encoder='ENCODER')


def test_rows_are_the_table_rows_under_the_protocol_with_their_remedy(tmp_path):
    for name in cold_start_table.ROWS:
        args = parse_args(cold_start_table.train_argv(name, options(tmp_path)))
        code, kind = cold_start_table.split_row(name)
        table_kind = 'hybrid' if kind.startswith('hybrid') else kind
        table = parse_args(dataset_table.train_argv(f'{code}_{table_kind}', argparse.Namespace(
            out=str(tmp_path / 'cold'), data_root='DATA', language_encoder='ENCODER')))
        assert (args.cold_start, args.cold_start_share, args.cold_start_seed) == (True, 0.05, 0)
        assert args.export_root == str(tmp_path / 'cold' / name)
        dropout = {'hybrid_iddrop': 0.3, 'hybrid_both': 0.3, 'hybrid_iddrop60': 0.6, 'hybrid_iddrop80': 0.8}
        assert args.id_dropout == dropout.get(kind, 0.0)
        assert args.content_loss_weight == (1.0 if kind in ('hybrid_content', 'hybrid_both') else 0.0)
        differing = {key for key in vars(args) if getattr(args, key) != getattr(table, key)}
        assert differing <= {'cold_start', 'id_dropout', 'content_loss_weight', 'export_root'}, differing


def fake_row(folder, overall, cold, bucket_zero, cold_users=4, bucket_users=10):
    (folder / 'logs').mkdir(parents=True)
    with open(folder / 'logs' / 'logs.csv', 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['epoch', 'seconds', 'val_NDCG@10'])
        writer.writerows([[1, 60.0, 0.02], [2, 60.0, 0.03]])
    (folder / 'test_mrl_metrics.json').write_text(json.dumps({'256': {'NDCG@10': overall, 'Recall@10': 2 * overall}}))
    (folder / 'test_mrl_metrics_cold_start.json').write_text(json.dumps({
        'users': cold_users, 'all_users': 100, 'held_out_items': 5,
        'by_size': {'256': {'NDCG@10': cold, 'Recall@10': 2 * cold}}}))
    (folder / 'test_mrl_metrics_by_popularity.json').write_text(json.dumps({
        'users': {'0': bucket_users}, 'by_size': {'256': {'0': {'NDCG@10': bucket_zero, 'Recall@10': 2 * bucket_zero}}}}))


def test_report_gives_ratios_and_the_never_target_users_that_were_in_training(tmp_path, capsys):
    out = tmp_path / 'cold'
    fake_row(out / 'beauty_text', overall=0.04, cold=0.02, bucket_zero=0.02)
    fake_row(out / 'beauty_hybrid', overall=0.05, cold=0.01, bucket_zero=0.004)
    assert cold_start_table.main(['report', '--out', str(out)]) == 0
    results = {r['row']: r for r in json.loads((out / 'cold_start_table.json').read_text())}
    # bucket 0 (10 users, mean .004) less the 4 held-out users (mean .01): 6 users with mean 0
    assert results['beauty_hybrid']['never_target_users'] == 6
    assert abs(results['beauty_hybrid']['never_target']['NDCG@10']) < 1e-12
    assert abs(results['beauty_text']['never_target']['NDCG@10'] - 0.02) < 1e-12
    table = (out / 'cold_start_table.md').read_text()
    assert '| hybrid | 0.0500 | 0.1000 | 1.000x | 0.0100 | 0.0200 | 0.50x | 0.0000 / 0.0000 | 2 |' in table
    assert '| text | 0.0400 | 0.0800 | 0.800x | 0.0200 | 0.0400 | 1.00x | 0.0200 / 0.0400 | 2 |' in table
    assert not results['beauty_id']['finished']


def test_report_adds_the_boosted_rows_and_boost_runs_eval_on_the_rows_without_a_file(tmp_path, monkeypatch):
    out = tmp_path / 'cold'
    fake_row(out / 'beauty_text', overall=0.04, cold=0.02, bucket_zero=0.02)
    fake_row(out / 'beauty_hybrid', overall=0.05, cold=0.01, bucket_zero=0.004)
    fake_row(out / 'beauty_id', overall=0.03, cold=0.0, bucket_zero=0.0)
    (out / 'beauty_hybrid' / 'test_mrl_metrics_new_item_boost.json').write_text(json.dumps({
        'tolerance': 0.01, 'boosts': {'256': 1.25}, 'test': {'by_size': {'256': {
            'boosted': {'all': {'NDCG@10': 0.049, 'Recall@10': 0.09}, 'held_out': {'NDCG@10': 0.03, 'Recall@10': 0.06}},
            'unboosted': {'all': {'NDCG@10': 0.05}, 'held_out': {'NDCG@10': 0.01}}}}}}))
    assert cold_start_table.main(['report', '--out', str(out)]) == 0
    table = (out / 'cold_start_table.md').read_text()
    assert 'tolerance 0.01), size 256:' in table
    # 0.049 / 0.05 overall; 0.06 / text-only's unboosted 0.04 held-out
    assert '| hybrid | 1.25 | 0.0490 | 0.980x | 0.0300 | 0.0600 | 1.50x |' in table
    calls = []
    monkeypatch.setattr(cold_start_table.subprocess, 'run',
                        lambda command, cwd: calls.append(command) or argparse.Namespace(returncode=0))
    assert cold_start_table.main(['boost', '--out', str(out), '--threads', '2']) == 0
    # text only: the hybrid has its file, the ID-only row has no new-item scores to boost, the rest are not finished
    assert [c[c.index('--export_root') + 1] for c in calls] == [str(out / 'beauty_text')]
    assert calls[0][-4:] == ['--new_item_boost', 'auto', '--threads', '2']
