"""The paper's width on Beauty: ID-only, text-only and hybrid items at D = 1024, and whether bf16 may train them.

    python scripts/paper_width.py run [--jobs 2] [--amp fp32|bf16] [ROW ...]   # the checks, then the main rows
    python scripts/paper_width.py report [--d256_from TABLE]                    # paper_width.md and .json
    python scripts/paper_width.py list [--verbose]                              # rows, their state, their commands

Main rows (`beauty_<kind>_d1024`): the three-dataset table's Beauty rows (scripts/dataset_table.py) at the
paper's sizes 8..1024, tested at the end of train.py. Check rows: its text-only row at D = 1024 for 2 epochs
in fp32 (seeds 42 and 43: their difference is the run-to-run noise) and in bf16; the main rows train in bf16
only where bf16 is native and within that noise at every epoch, else in fp32 (`--amp` decides without the
checks). A started main row keeps its --amp. Run folders: `<--out>/<row>`; features: the table's. Run it in
the background (`nohup ... run > pw.log &`); the same command resumes. docs/content_features.md, "The paper's width".
"""
import fcntl
import functools
import json
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `python scripts/paper_width.py` runs from anywhere

from evaluation.metrics import TIED_SHARE  # noqa: E402  (after the path set-up above)
from runs.run_folder import (ARGS_FILE, POPULARITY_FILE, CheckpointError, read_run_config,  # noqa: E402
                             read_test_metrics)
from scripts import dataset_table  # noqa: E402
from scripts.bf16_check import CHECK_EPOCHS, bf16_verdict, check_by_size, check_markdown  # noqa: E402
from scripts.study_rows import (ensure_popularity, parse_study_options, popularity_markdown, read_log,  # noqa: E402
                                row_state, run_rows, study_parser, try_lock, write_report)
from utils.paper import PAPER_SIZES  # noqa: E402

SIZES = ','.join(str(size) for size in PAPER_SIZES)
# What each check row sets on top of the table's Beauty text-only row at D = 1024.
CHECK_ROWS = {
    'check_fp32': [('--num_epochs', str(CHECK_EPOCHS)), ('--seed', '42'), ('--amp', 'none')],
    'check_fp32_seed2': [('--num_epochs', str(CHECK_EPOCHS)), ('--seed', '43'), ('--amp', 'none')],
    'check_bf16': [('--num_epochs', str(CHECK_EPOCHS)), ('--seed', '42'), ('--amp', 'bf16')],
}
MAIN_ROWS = [f'beauty_{kind}_d1024' for kind in dataset_table.REPRESENTATIONS]
ROWS = list(CHECK_ROWS) + MAIN_ROWS
AMP = {'fp32': 'none', 'bf16': 'bf16'}  # this script's --amp -> train.py's


def kind_of(name):
    return 'text' if name in CHECK_ROWS else name.split('_')[1]


def set_option(argv, flag, value):
    """argv with `flag` set to `value` in place (appended when absent): one value per option on the command."""
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


def train_argv(name, options, amp='none'):
    """The table's Beauty row of the row's kind at sizes 8..1024 in <out>/<row>; a check row also sets its
    epochs, seed and amp, a main row `amp`."""
    argv = dataset_table.train_argv(f'beauty_{kind_of(name)}', options)
    argv = set_option(argv, '--mrl_hidden_sizes', SIZES)
    argv = set_option(argv, '--export_root', str(Path(options.out) / name))
    for flag, value in CHECK_ROWS.get(name, [('--amp', amp)]):
        argv = set_option(argv, flag, value)
    return argv


def row_command(name, options, amp='none'):
    return [sys.executable, 'train.py'] + train_argv(name, options, amp)


def is_finished(folder):
    """Tested; a check row also once its epochs are logged (the verdict reads validation only)."""
    folder = Path(folder)
    return (folder / 'test_mrl_metrics.json').exists() or (folder.name in CHECK_ROWS
                                                          and len(read_log(folder)) >= CHECK_EPOCHS)


def started_amp(folder):
    """The --amp a started row recorded in its args.yaml; None before it started."""
    if not (Path(folder) / ARGS_FILE).exists():
        return None
    try:
        return read_run_config(folder).get('amp', 'none')
    except CheckpointError as error:
        raise SystemExit(f'error: {error}') from None


def device_bf16():
    """(native, reason) for bf16 on the device the rows train on (train.py's --device auto), probed now."""
    from utils.runtime import bf16_is_native, resolve_device
    device = resolve_device('auto')
    native, reason = bf16_is_native(device)
    if native and device.type != 'cpu':
        reason = f'{device.type} bf16 is native'
    return native, reason


def wait_until_tested(out, names):
    """Block while a row's train.py still holds its lock: a check row counts as finished after its epochs,
    while train.py tests it; the main rows then start without competing with that test."""
    for name in names:
        lock = try_lock(Path(out) / f'.{name}.lock')
        if lock is None:
            print(f'{time.strftime("%H:%M:%S")} waiting for {name} to finish its test', flush=True)
            lock = open(Path(out) / f'.{name}.lock', 'a')
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.close()


def decide(options, names, native):
    """(train.py's --amp for the main rows that have not started, why); None when a check row failed."""
    if options.amp:
        why = f'--amp {options.amp} was given, so the check rows are not run'
        if options.amp == 'bf16' and not native()[0]:
            why += f'; bf16 is not native here ({native()[1]}): train.py will warn and compute in fp32'
        return AMP[options.amp], why
    if not native()[0]:
        return 'none', f'bf16 is not native here ({native()[1]}), so the check rows are not run'
    out, mains = Path(options.out), [n for n in names if n in MAIN_ROWS]
    checks = list(CHECK_ROWS) if mains else [n for n in names if n in CHECK_ROWS]
    if run_rows(checks, out, lambda name: row_command(name, options), is_finished,
                jobs=options.jobs, threads=options.threads, poll=options.poll):
        return None
    if mains:
        wait_until_tested(out, checks)
    verdict = bf16_verdict(*(read_log(out / name) for name in CHECK_ROWS), native())
    return ('bf16' if verdict.passed else 'none'), verdict.reason


def run(options, native=None):
    out, names = Path(options.out), options.rows or ROWS
    decision = decide(options, names, functools.cache(lambda: native or device_bf16()))  # probed when needed
    if decision is None:
        print(f'error: the check rows did not finish (their logs are in {out}); --amp fp32 trains the main rows '
              f'in fp32 without them')
        return 1
    amp, why = decision
    mains = [n for n in names if n in MAIN_ROWS]
    if not mains:  # only check rows were asked for: say what they decided, start nothing
        print(f'check rows done; the main rows would train with --amp {amp}, because {why}', flush=True)
        return 0
    print(f'main rows: --amp {amp}, because {why}', flush=True)
    for name in mains:
        recorded = started_amp(out / name)
        if recorded not in (None, amp) and not is_finished(out / name):
            print(f'{name} started with --amp {recorded} and keeps it: a resume must not change its options '
                  f'(the decision now is --amp {amp})', flush=True)
    return run_rows(mains, out, lambda name: row_command(name, options, started_amp(out / name) or amp), is_finished,
                    jobs=options.jobs, threads=options.threads, poll=options.poll)


def list_rows(options, native=None):
    out = Path(options.out)
    for name in ROWS:
        amp = started_amp(out / name)
        note = f' (--amp {amp})' if amp and name in MAIN_ROWS else ''
        print(f'{name:22s} {row_state(out / name, is_finished)}{note}')
        if options.verbose:
            print('    ' + ' '.join(shlex.quote(a) for a in row_command(name, options, amp or 'AMP')))
    if options.verbose:
        print('AMP: the --amp `run` decides for a main row that has not started (bf16 where the check rows pass)')
    return 0


def main_result(name, folder, options):
    log = read_log(folder)
    result = {'row': name, 'representation': kind_of(name), 'finished': is_finished(folder),
              'amp': started_amp(folder), 'epochs': len(log), 'minutes': sum(float(r['seconds']) for r in log) / 60}
    if log:
        best = max(log, key=lambda r: float(r['val_NDCG@10']))
        result.update(best_epoch=int(best['epoch']), val_NDCG10=float(best['val_NDCG@10']))
    result['test'] = read_test_metrics(folder)
    result['by_popularity'] = ensure_popularity(folder) if result['test'] else None
    other = Path(options.d256_from) / f'beauty_{kind_of(name)}' if options.d256_from else None  # the table's row
    result['d256'] = read_test_metrics(other) if other else None
    popularity = other / f'{POPULARITY_FILE}.json' if other else None  # read only: the table's folder is not ours
    result['d256_by_popularity'] = json.loads(popularity.read_text()) if popularity and popularity.exists() else None
    return result


def cell(metrics, size, metric):
    return f'{metrics[str(size)][metric]:.4f}' if metrics and str(size) in metrics else '–'


def earlier_tie_rule(metrics):
    """A metrics file without tied_share was tested under the earlier tie rule (README, "Protocol")."""
    return bool(metrics) and any(TIED_SHARE not in values for values in metrics.values())


def summary_markdown(results):
    """Largest size of each main row beside the D = 256 row of its kind and the paper's Beauty rows."""
    lines = ['| items | NDCG@10 | Recall@10 | D = 256: NDCG@10 | D = 256: Recall@10 | D = 1024 / D = 256 NDCG@10 | '
             'amp | epochs (best) | minutes |', '|---|---:|---:|---:|---:|---:|---|---:|---:|']
    for r in results:
        test, d256 = r['test'], r['d256']
        top, top256 = PAPER_SIZES[-1], max((int(s) for s in d256), default=None) if d256 else None
        ratio = (f"{test[str(top)]['NDCG@10'] / d256[str(top256)]['NDCG@10']:.2f}x"
                 if test and d256 and d256[str(top256)]['NDCG@10'] else '–')
        mark = ' †' if earlier_tie_rule(d256) else ''
        state = '' if r['finished'] else ', running'
        lines.append(f"| {r['representation']} | {cell(test, top, 'NDCG@10')} | {cell(test, top, 'Recall@10')} | "
                     f"{cell(d256, top256, 'NDCG@10')}{mark} | {cell(d256, top256, 'Recall@10')}{mark} | {ratio} | "
                     f"{r['amp']} | {r['epochs']} ({r.get('best_epoch', '–')}){state} | {r['minutes']:.0f} |")
    for label, ndcg, recall in dataset_table.paper_rows('beauty'):
        lines.append(f'| {label} | {ndcg:.4f} | {recall:.4f} | | | | | | |')
    if any(earlier_tie_rule(r['d256']) for r in results):
        lines.append('\n† tested under the earlier tie rule (targets ahead of their ties; README, "Protocol"); '
                     '`eval.py --export_root DIR --force` tests it again.')
    return '\n'.join(lines)


def sizes_markdown(r):
    lines = ['| size | NDCG@10 | Recall@10 | D = 256: NDCG@10 | D = 256: Recall@10 |', '|---:|---:|---:|---:|---:|']
    for size in PAPER_SIZES:
        lines.append(f"| {size} | {cell(r['test'], size, 'NDCG@10')} | {cell(r['test'], size, 'Recall@10')} | "
                     f"{cell(r['d256'], size, 'NDCG@10')} | {cell(r['d256'], size, 'Recall@10')} |")
    return '\n'.join(lines)


def check_result(out, native):
    logs = {name: read_log(out / name) for name in CHECK_ROWS}
    complete = all(len(log) >= CHECK_EPOCHS for log in logs.values())
    verdict = bf16_verdict(*logs.values(), (native or device_bf16()) if complete else (False, 'not probed'))
    rows = {name: {'amp': started_amp(out / name), 'epochs': len(log),
                   'minutes': sum(float(r['seconds']) for r in log) / 60} for name, log in logs.items()}
    return {'rows': rows, 'passed': verdict.passed, 'reason': verdict.reason, 'epochs': verdict.epochs,
            'by_size': check_by_size(*logs.values()) if complete else []}


def report(options, native=None):
    out = Path(options.out)
    results = [main_result(name, out / name, options) for name in MAIN_ROWS if (out / name / ARGS_FILE).exists()]
    checks_started = any((out / name / ARGS_FILE).exists() for name in CHECK_ROWS)
    if not results and not checks_started:
        raise SystemExit(f'error: no row has started under {out}/; run `python {__file__} run` first')
    source = ('no D = 256 rows: --d256_from TABLE was not given' if not options.d256_from else
              f'D = 256 rows from {options.d256_from}' if Path(options.d256_from).is_dir() else
              f'no D = 256 rows: {options.d256_from} does not exist')
    parts = []
    if results:
        parts.append(f'Beauty at D = 1024, test (released protocol), largest size ({source}):\n\n'
                     + summary_markdown(results))
        parts += [f"#### {r['row']}: every size beside the D = 256 row\n\n" + sizes_markdown(r) for r in results]
        by_popularity = {r['row']: r['by_popularity'] for r in results if r['by_popularity']}
        by_popularity.update({f"beauty_{r['representation']} (D = 256)": r['d256_by_popularity']
                              for r in results if r['d256_by_popularity']})
        if by_popularity:
            parts.append('By popularity of the test target, largest size:\n\n'
                         + popularity_markdown(list(by_popularity), by_popularity))
    check = check_result(out, native) if checks_started else None
    parts.append('bf16 check: validation NDCG@10 (largest size) per epoch\n\n' + check_markdown(check) if check
                 else 'bf16 check: the check rows have not run (`run --amp ...` given, or bf16 not native here).')
    return write_report(out, 'paper_width', '\n\n'.join(parts), {'main': results, 'check': check})


def main(argv=None, native=None):
    """`native` ((bool, reason)) stands for the device's bf16 probe (tests)."""
    parser = study_parser(__doc__, REPO.parent / 'study' / 'paper_width')
    parser.add_argument('--amp', choices=sorted(AMP), default=None,
                        help='train the main rows in fp32 or bf16 without the check rows (default: the checks decide)')
    parser.add_argument('--d256_from', default=None,
                        help="a three-dataset table's folder: the report sets its beauty_<kind> rows beside these")
    options = parse_study_options(parser, sys.argv[1:] if argv is None else argv, ROWS)
    return {'run': run, 'report': report, 'list': list_rows}[options.command](options, native)


if __name__ == '__main__':
    sys.exit(main())
