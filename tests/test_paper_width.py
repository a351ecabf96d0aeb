"""scripts/paper_width.py: each row is the three-dataset table's Beauty row at the paper's sizes, the bf16
verdict, the --amp a main row trains with, and the report's numbers (no training)."""
import argparse
import csv
import json

import pytest
import yaml

from config import parse_args
from scripts import bf16_check, dataset_table, paper_width

SIZES = [8, 16, 32, 64, 128, 256, 512, 1024]


def options(tmp_path):
    return argparse.Namespace(out=str(tmp_path / 'paper_width'), data_root='DATA', language_encoder='ENCODER')


def test_rows_are_the_tables_beauty_rows_at_the_papers_sizes(tmp_path):
    table_options = argparse.Namespace(out=str(tmp_path / 'table'), data_root='DATA', language_encoder='ENCODER')
    expected = {'check_fp32': (2, 42, 'none'), 'check_fp32_seed2': (2, 43, 'none'), 'check_bf16': (2, 42, 'bf16')}
    for name in paper_width.ROWS:
        kind = 'text' if name in paper_width.CHECK_ROWS else name.split('_')[1]
        table = vars(parse_args(dataset_table.train_argv(f'beauty_{kind}', table_options)))
        for amp in ('none', 'bf16'):
            args = vars(parse_args(paper_width.train_argv(name, options(tmp_path), amp)))
            assert args['mrl_hidden_sizes'] == SIZES and args['dataset_code'] == 'beauty'
            assert args['export_root'] == str(tmp_path / 'paper_width' / name) and args['resume'] == 'auto'
            assert args.get('feature_dir') == table.get('feature_dir')  # features shared with the table
            differ = {key for key in args if args[key] != table[key]}
            if name in expected:
                assert (args['num_epochs'], args['seed'], args['amp']) == expected[name]
                assert differ <= {'mrl_hidden_sizes', 'export_root', 'num_epochs', 'seed', 'amp'}, name
            else:
                assert (args['num_epochs'], args['seed'], args['amp']) == (10, 42, amp)
                assert differ <= {'mrl_hidden_sizes', 'export_root', 'amp'}, name
    assert paper_width.MAIN_ROWS == ['beauty_id_d1024', 'beauty_text_d1024', 'beauty_hybrid_d1024']
    command = paper_width.row_command('check_bf16', options(tmp_path))
    assert command.count('--amp') == 1 and command.count('--num_epochs') == 1  # set in place, not repeated


def log(*values, seconds=540.0):
    return [{'epoch': str(epoch), 'seconds': str(seconds), 'val_NDCG@10': str(value)}
            for epoch, value in enumerate(values, start=1)]


NATIVE = (True, 'avx512_bf16 (test)')


def test_bf16_passes_within_the_seeds_difference_and_only_where_native():
    fp32, seed2 = log(0.0300, 0.0400), log(0.0290, 0.0420)  # noise: 0.0010, then 0.0020
    verdict = bf16_check.bf16_verdict(fp32, seed2, log(0.0305, 0.0385), NATIVE)
    assert verdict.passed and 'avx512_bf16 (test)' in verdict.reason
    assert 'epoch 2: |bf16 - fp32| = 0.00150 against the noise 0.00200' in verdict.reason
    assert [round(e['difference'], 6) for e in verdict.epochs] == [0.0005, -0.0015]
    different = bf16_check.bf16_verdict(fp32, seed2, log(0.0305, 0.0430), NATIVE)  # 0.0030 > 0.0020
    assert not different.passed and 'beyond the run-to-run noise at epoch 2' in different.reason
    assert '0.00300 against the noise 0.00200' in different.reason and not different.epochs[1]['within']
    emulated = bf16_check.bf16_verdict(fp32, seed2, log(0.0305, 0.0385), (False, 'no bf16 instructions'))
    assert not emulated.passed and 'not native here: no bf16 instructions' in emulated.reason
    assert '\n' not in emulated.reason


def test_the_floor_stands_for_the_noise_when_the_seeds_agree():
    same = log(0.0300, 0.0400)
    assert bf16_check.bf16_verdict(same, same, log(0.0304, 0.0397), NATIVE).passed  # within 0.0005
    assert not bf16_check.bf16_verdict(same, same, log(0.0304, 0.0393), NATIVE).passed  # 0.0007 at epoch 2
    assert bf16_check.bf16_verdict(same, same, log(0.0304, 0.0393), NATIVE, floor=0.001).passed
    short = bf16_check.bf16_verdict(same, same, log(0.0304), NATIVE)
    assert not short.passed and short.reason == 'the check is not finished: check_bf16 has 1 of 2 epochs'


def write_log(folder, values, seconds=540.0):
    (folder / 'logs').mkdir(parents=True, exist_ok=True)
    with open(folder / 'logs' / 'logs.csv', 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['epoch', 'train_loss', 'seconds', 'val_NDCG@10'])
        writer.writerows([epoch, 9.0 - epoch, seconds, value] for epoch, value in enumerate(values, start=1))


def started(folder, amp):
    folder.mkdir(parents=True)
    (folder / 'args.yaml').write_text(yaml.safe_dump({'amp': amp, 'mrl_hidden_sizes': SIZES}))


def fake_run_rows(calls, bf16_curve=(0.0305, 0.0385)):
    """run_rows without training: records each call's commands; check rows get their two epochs."""
    curves = {'check_fp32': (0.0300, 0.0400), 'check_fp32_seed2': (0.0290, 0.0420), 'check_bf16': bf16_curve}

    def run_rows(names, out, command_of, is_finished, **_):
        calls.append({name: command_of(name) for name in names})
        for name in names:
            if name in curves:
                write_log(out / name, curves[name])
        return 0
    return run_rows


def amp_of(command):
    return command[command.index('--amp') + 1]


def test_a_started_main_row_keeps_the_amp_it_started_with(tmp_path, monkeypatch, capsys):
    out = tmp_path / 'paper_width'
    started(out / 'beauty_text_d1024', 'none')
    calls = []
    monkeypatch.setattr(paper_width, 'run_rows', fake_run_rows(calls))
    argv = ['run', '--out', str(out), '--language_encoder', 'ENCODER', '--data_root', 'DATA']
    assert paper_width.main(argv, native=NATIVE) == 0
    checks, mains = calls
    assert list(checks) == list(paper_width.CHECK_ROWS) and amp_of(checks['check_bf16']) == 'bf16'
    assert {name: amp_of(c) for name, c in mains.items()} == {
        'beauty_id_d1024': 'bf16', 'beauty_text_d1024': 'none', 'beauty_hybrid_d1024': 'bf16'}
    printed = capsys.readouterr().out
    assert 'main rows: --amp bf16, because bf16 agrees with fp32 within the run-to-run noise' in printed
    assert 'beauty_text_d1024 started with --amp none and keeps it' in printed


def test_fp32_when_bf16_differs_is_not_native_or_is_refused(tmp_path, monkeypatch, capsys):
    out = tmp_path / 'paper_width'
    argv = ['run', '--out', str(out), '--language_encoder', 'ENCODER', '--data_root', 'DATA']
    calls = []
    monkeypatch.setattr(paper_width, 'run_rows', fake_run_rows(calls, bf16_curve=(0.0305, 0.0430)))
    assert paper_width.main(argv, native=NATIVE) == 0
    assert {amp_of(c) for c in calls[1].values()} == {'none'}
    assert 'main rows: --amp none, because bf16 differs from fp32' in capsys.readouterr().out
    calls.clear()  # not native: no check row is trained
    assert paper_width.main(argv, native=(False, 'no bf16 here')) == 0
    assert len(calls) == 1 and {amp_of(c) for c in calls[0].values()} == {'none'}
    assert 'bf16 is not native here (no bf16 here), so the check rows are not run' in capsys.readouterr().out
    calls.clear()  # --amp decides without the checks
    assert paper_width.main(argv + ['--amp', 'fp32', 'beauty_id_d1024'], native=NATIVE) == 0
    assert calls == [{'beauty_id_d1024': calls[0]['beauty_id_d1024']}]
    assert amp_of(calls[0]['beauty_id_d1024']) == 'none'


def metrics(scale, sizes, tied_share=True):
    return {str(s): {'NDCG@10': scale * s, 'Recall@10': 2 * scale * s, **({'tied_share': 0.0} if tied_share else {})}
            for s in sizes}


def fake_row(folder, amp, by_size, curve=(0.01, 0.03, 0.02)):
    started(folder, amp)
    write_log(folder, curve, seconds=600.0)
    (folder / 'test_mrl_metrics.json').write_text(json.dumps(by_size))
    top = str(max(int(s) for s in by_size))
    report = {'buckets': {'0': [0, 0], '1-4': [1, 4]}, 'users': {'0': 3, '1-4': 7},
              'by_size': {top: {'0': {'NDCG@10': 0.125, 'Recall@10': 0.25},
                                '1-4': {'NDCG@10': by_size[top]['NDCG@10'], 'Recall@10': 0.5}}}}
    (folder / 'test_mrl_metrics_by_popularity.json').write_text(json.dumps(report))


def test_report_sets_each_row_beside_the_d256_row_the_paper_and_the_check(tmp_path):
    out, table = tmp_path / 'paper_width', tmp_path / 'table'
    fake_row(out / 'beauty_text_d1024', 'bf16', metrics(0.00005, SIZES))    # 1024: 0.0512
    fake_row(out / 'beauty_id_d1024', 'none', metrics(0.00004, SIZES))      # 1024: 0.0410
    fake_row(table / 'beauty_text', 'none', metrics(0.00016, SIZES[:6], tied_share=False))  # 256: 0.04096
    for name, curve in (('check_fp32', (0.0300, 0.0400)), ('check_fp32_seed2', (0.0290, 0.0420)),
                        ('check_bf16', (0.0305, 0.0385))):
        started(out / name, 'bf16' if name == 'check_bf16' else 'none')
        write_log(out / name, curve)
    assert paper_width.main(['report', '--out', str(out), '--d256_from', str(table)], native=NATIVE) == 0
    md = (out / 'paper_width.md').read_text()
    assert '| text | 0.0512 | 0.1024 | 0.0410 † | 0.0819 † | 1.25x | bf16 | 3 (2) | 30 |' in md
    assert '| id | 0.0410 | 0.0819 | – | – | – | none | 3 (2) | 30 |' in md  # no beauty_id in the table
    assert '| paper fMRLRec, text + image, D = 1024 (Table 2) | 0.0520 | 0.0939 |' in md
    assert '| paper fMRLRec text only (ablation) | 0.0449 | 0.0859 |' in md and '| paper LRURec (ID-based) | 0.0438' in md
    assert '† tested under the earlier tie rule' in md
    text_sizes = md.split('#### beauty_text_d1024')[1]
    assert '| 8 | 0.0004 | 0.0008 | 0.0013 | 0.0026 |' in text_sizes and '| 1024 | 0.0512 | 0.1024 | – | – |' in text_sizes
    assert '| beauty_text_d1024 | 0.1250 | 0.2500 | 0.0512 | 0.5000 |' in md  # buckets, largest size
    assert '| beauty_text (D = 256) | 0.1250 | 0.2500 | 0.0410 | 0.5000 |' in md
    assert '| 2 | 0.0400 | 0.0420 | 0.0385 | -0.00150 | 0.00200 | yes |' in md
    assert 'Verdict: bf16, because bf16 agrees with fp32' in md and 'check_bf16 2 epochs in 18 min' in md
    results = json.loads((out / 'paper_width.json').read_text())
    assert [r['row'] for r in results['main']] == ['beauty_id_d1024', 'beauty_text_d1024']
    assert results['main'][1]['test']['1024']['NDCG@10'] == pytest.approx(0.0512)
    assert results['main'][1]['d256']['256']['NDCG@10'] == pytest.approx(0.04096)
    assert results['check']['passed'] and results['check']['epochs'][0]['noise'] == pytest.approx(0.001)


def test_report_without_the_table_or_any_row(tmp_path):
    with pytest.raises(SystemExit, match='no row has started'):
        paper_width.main(['report', '--out', str(tmp_path)])
    out = tmp_path / 'paper_width'
    fake_row(out / 'beauty_hybrid_d1024', 'none', metrics(0.00005, SIZES))
    assert paper_width.main(['report', '--out', str(out), '--d256_from', str(tmp_path / 'missing')]) == 0
    md = (out / 'paper_width.md').read_text()
    assert f'no D = 256 rows: {tmp_path / "missing"} does not exist' in md
    assert 'bf16 check: the check rows have not run' in md


def test_list_shows_each_rows_state_and_recorded_amp(tmp_path, capsys):
    out = tmp_path / 'paper_width'
    started(out / 'beauty_id_d1024', 'bf16')
    write_log(out / 'check_fp32', (0.03, 0.04))
    argv = ['list', '--verbose', '--out', str(out), '--language_encoder', 'ENCODER']
    assert paper_width.main(argv) == 0
    printed = capsys.readouterr().out
    assert 'check_fp32             finished' in printed and 'beauty_id_d1024        started (--amp bf16)' in printed
    assert 'beauty_text_d1024      pending' in printed and '--amp AMP' in printed


def test_check_rows_alone_report_their_verdict_and_start_no_main_row(tmp_path, monkeypatch, capsys):
    out = tmp_path / 'paper_width'
    calls = []
    monkeypatch.setattr(paper_width, 'run_rows', fake_run_rows(calls))
    argv = ['run', '--out', str(out), '--language_encoder', 'ENCODER', '--data_root', 'DATA', 'check_bf16', 'check_fp32']
    assert paper_width.main(argv, native=NATIVE) == 0
    assert calls == [{name: calls[0][name] for name in ('check_bf16', 'check_fp32')}]  # no main row started
    printed = capsys.readouterr().out
    assert 'check rows done; the main rows would train with --amp none, because the check is not finished: ' \
           'check_fp32_seed2 has 0 of 2 epochs' in printed and 'main rows: --amp' not in printed


def test_report_shows_every_size_of_the_check_at_its_last_epoch(tmp_path):
    out = tmp_path / 'paper_width'
    per_size = {'check_fp32': (0.010, 0.040), 'check_fp32_seed2': (0.011, 0.041), 'check_bf16': (0.008, 0.0405)}
    for name, (small, large) in per_size.items():
        started(out / name, 'bf16' if name == 'check_bf16' else 'none')
        (out / name / 'logs').mkdir()
        columns = [f'val_NDCG@10@size{s}' for s in SIZES]
        with open(out / name / 'logs' / 'logs.csv', 'w', newline='') as handle:
            writer = csv.writer(handle)
            writer.writerow(['epoch', 'train_loss', 'seconds', 'val_NDCG@10'] + columns)
            for epoch in (1, 2):  # only the last epoch's sizes are shown; epoch 1 is a decoy
                sizes = [small * epoch / 2] + [large * epoch / 2] * (len(SIZES) - 1)
                writer.writerow([epoch, 1.0, 60.0, large * epoch / 2] + sizes)
    assert paper_width.main(['report', '--out', str(out)], native=NATIVE) == 0
    md = (out / 'paper_width.md').read_text()
    assert '| 8 | 0.0100 | 0.0110 | 0.0080 | 0.00200 | 0.00100 | 20.0% |' in md
    assert '| 1024 | 0.0400 | 0.0410 | 0.0405 | 0.00050 | 0.00100 | 1.3% |' in md
    check = json.loads((out / 'paper_width.json').read_text())['check']
    assert [r['size'] for r in check['by_size']] == SIZES and check['passed']
