"""Train once, deploy anywhere, measured: each nested size against a model trained at that width alone.

    python scripts/nested_dedicated.py run [--jobs 1] [ROW ...]    # train (and test) the rows not finished
    python scripts/nested_dedicated.py report                       # the tables (markdown and JSON)
    python scripts/nested_dedicated.py list [--verbose]             # rows, their state, their commands

A group is one dataset and one kind of item representation (ID-only, text-only, hybrid) at the
three-dataset table's configuration (scripts/dataset_table.py: the dataset's preset, dropout 0.1,
lr 3e-3, a 10-epoch cosine budget, whitened MiniLM features where features are used). Its rows are
the nested run at D = 256 (sizes 8..256, `<group>_nested`) and one dedicated run per size s
(`--mrl_hidden_sizes s`, `<group>_d<s>`). Every row is tested at its best validation epoch under the
released protocol. The report compares, per size, the nested run's size-s slice with the dedicated
model of width s (NDCG@10, Recall@10, their ratio, the popularity buckets) and the training cost of
the one nested run with the sum of the dedicated ones (wall and CPU seconds, parameters).

`--nested_from DIR` takes the nested rows from a finished three-dataset table (its `<code>_<kind>`
folders) instead of training them again. Rows run in the background like the table's:
`nohup python scripts/nested_dedicated.py run > nested.log &`; the same command resumes them.
Each row's command runs under /usr/bin/time, which appends its wall and CPU seconds to
`<row>/cost.txt` (one line per start, so a resumed row sums its starts). Results: RESULTS.md,
"Nested against dedicated".
"""
import json
import shlex
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `python scripts/nested_dedicated.py` runs from anywhere

from runs.run_folder import STATE_DICT_KEY, best_checkpoint_path, load_checkpoint  # noqa: E402
from scripts import dataset_table  # noqa: E402  (after the path set-up above)
from scripts.study_rows import (ensure_popularity, parse_study_options, read_log, row_state,  # noqa: E402
                                run_rows, study_parser, write_report)

SIZES = (8, 16, 32, 64, 128, 256)
# Beauty in every kind first (text-only, the paper's content model, leading), then the kind that
# wins on Clothing in the three-dataset table (text-only, 1.73x ID).
GROUPS = ('beauty_text', 'beauty_hybrid', 'beauty_id', 'clothing_text')
COST_FILE = 'cost.txt'
# The target for "deploy anywhere": from size 32 up, a slice reaches 0.95x the dedicated
# model's test NDCG@10. A shortfall is relative to that target: 1 - ratio / 0.95.
TARGET_RATIO, TARGET_FROM = 0.95, 32


def group_rows(group):
    return [f'{group}_nested'] + [f'{group}_d{size}' for size in SIZES]


ROWS = [row for group in GROUPS for row in group_rows(group)]


def split_row(name):
    """'beauty_text_d32' -> ('beauty_text', 32); 'beauty_text_nested' -> ('beauty_text', None)."""
    group, variant = name.rsplit('_', 1)
    return group, (None if variant == 'nested' else int(variant[1:]))


def row_folder(name, options):
    group, size = split_row(name)
    if size is None and options.nested_from:
        return Path(options.nested_from) / group
    return Path(options.out) / name


def train_argv(name, options):
    """The three-dataset table's arguments of the group, at the row's sizes and folder."""
    group, size = split_row(name)
    argv = dataset_table.train_argv(group, options)
    sizes_at = argv.index('--mrl_hidden_sizes') + 1
    argv[sizes_at] = ','.join(str(s) for s in SIZES) if size is None else str(size)
    argv[argv.index('--export_root') + 1] = str(row_folder(name, options))
    return argv


def row_command(name, options):
    folder = row_folder(name, options)
    timer = shutil.which('time') or '/usr/bin/time'
    train = ' '.join(shlex.quote(a) for a in [sys.executable, 'train.py'] + train_argv(name, options))
    # The folder exists before the timer appends to its cost file (train.py would make it later).
    return ['bash', '-c', f'mkdir -p {shlex.quote(str(folder))} && {timer} -f "%e %U %S" '
            f'-a -o {shlex.quote(str(folder / COST_FILE))} {train}']


def is_finished(folder):
    return (Path(folder) / 'test_mrl_metrics.json').exists()


def read_cost(folder):
    """(wall, cpu) seconds summed over the row's starts, or None without a cost file. Lines that
    are not three numbers (the timer's notes on a killed command) are skipped."""
    path = Path(folder) / COST_FILE
    if not path.exists():
        return None
    wall = cpu = 0.0
    for line in path.read_text().splitlines():
        parts = line.split()
        try:
            values = [float(p) for p in parts]
        except ValueError:
            continue
        if len(values) == 3:
            wall, cpu = wall + values[0], cpu + values[1] + values[2]
    return wall, cpu


def parameter_count(folder):
    state = load_checkpoint(best_checkpoint_path(folder))[STATE_DICT_KEY]
    return sum(t.numel() for t in state.values())


def row_result(name, folder):
    log = read_log(folder)
    result = {'row': name, 'finished': is_finished(folder), 'epochs': len(log),
              'train_minutes': sum(float(r['seconds']) for r in log) / 60}
    if log:
        best = max(log, key=lambda r: float(r['val_NDCG@10']))
        result['best_epoch'] = int(best['epoch'])
    cost = read_cost(folder)
    if cost:
        result['wall_seconds'], result['cpu_seconds'] = cost
    if result['finished']:
        result['test'] = json.loads((Path(folder) / 'test_mrl_metrics.json').read_text())
        result['parameters'] = parameter_count(folder)
        result['by_popularity'] = ensure_popularity(folder)
    return result


def ratio(a, b):
    return f'{a / b:.2f}x' if b else '–'


def size_lines(group, results):
    """Per size: the nested slice against the dedicated model."""
    nested = results.get(f'{group}_nested', {}).get('test')
    lines = ['| size | nested NDCG@10 | dedicated NDCG@10 | ratio | nested Recall@10 | dedicated Recall@10 | ratio | '
             'dedicated epochs (best) |', '|---:|---:|---:|---:|---:|---:|---:|---:|']
    for size in SIZES:
        dedicated = results.get(f'{group}_d{size}', {})
        n = nested[str(size)] if nested else None
        d = dedicated['test'][str(size)] if 'test' in dedicated else None
        cells = []
        for metric in ('NDCG@10', 'Recall@10'):
            cells += [f'{n[metric]:.4f}' if n else '–', f'{d[metric]:.4f}' if d else '–',
                      ratio(n[metric], d[metric]) if n and d else '–']
        state = f"{dedicated.get('epochs', 0)} ({dedicated.get('best_epoch', '–')})" if dedicated else 'not started'
        if dedicated and not dedicated['finished']:
            state += ', running'
        lines.append(f'| {size} | ' + ' | '.join(cells) + f' | {state} |')
    return lines


def target_line(group, results):
    """One sentence: the sizes from TARGET_FROM up where the slice meets the target, and by how much
    it misses elsewhere; sizes without both rows finished are named as not measured."""
    nested = results.get(f'{group}_nested', {}).get('test')
    met, missed, unmeasured = [], [], []
    for size in (s for s in SIZES if s >= TARGET_FROM):
        dedicated = results.get(f'{group}_d{size}', {}).get('test')
        if not (nested and dedicated):
            unmeasured.append(str(size))
            continue
        n, d = nested[str(size)]['NDCG@10'], dedicated[str(size)]['NDCG@10']
        if n >= TARGET_RATIO * d:  # a dedicated model at 0 is met, not divided by
            met.append(f'{size} ({ratio(n, d)})')
        else:
            missed.append(f'{size} ({ratio(n, d)}, {1 - n / (TARGET_RATIO * d):.0%} short)')
    parts = [f'met at {", ".join(met) or "no size"}']
    if missed:
        parts.append(f'missed at {", ".join(missed)}')
    if unmeasured:
        parts.append(f'not measured yet at {", ".join(unmeasured)}')
    return (f"Target (nested NDCG@10 at least {TARGET_RATIO}x the dedicated model's from size {TARGET_FROM} "
            f"up): {'; '.join(parts)}.")


def bucket_lines(group, results):
    """NDCG@10 per popularity bucket, per size, nested slice / dedicated model."""
    nested = results.get(f'{group}_nested', {}).get('by_popularity')
    reports = {size: results.get(f'{group}_d{size}', {}).get('by_popularity') for size in SIZES}
    any_report = nested or next((r for r in reports.values() if r), None)
    if any_report is None:
        return []
    buckets = [b for b in any_report['buckets'] if any_report['users'][b]]
    lines = ['| size | ' + ' | '.join(f'{b} ({any_report["users"][b]:,} users): nested / dedicated' for b in buckets)
             + ' |', '|---:|' + '---:|' * len(buckets)]
    for size in SIZES:
        cells = []
        for bucket in buckets:
            values = [r['by_size'][str(size)][bucket]['NDCG@10'] if r and str(size) in r['by_size'] else None
                      for r in (nested, reports[size])]
            cells.append(' / '.join(f'{v:.4f}' if v is not None else '–' for v in values))
        lines.append(f'| {size} | ' + ' | '.join(cells) + ' |')
    return lines


def cost_lines(group, results):
    """One nested run against the sum of the dedicated ones (finished rows only)."""
    nested = results.get(f'{group}_nested', {})
    dedicated = [results[f'{group}_d{s}'] for s in SIZES if results.get(f'{group}_d{s}', {}).get('finished')]
    if not nested.get('finished') or not dedicated:
        return []
    note = '' if len(dedicated) == len(SIZES) else f' ({len(dedicated)} of {len(SIZES)} dedicated rows finished)'

    def total(rows, key):
        values = [r.get(key) for r in rows]
        return sum(values) if all(v is not None for v in values) else None

    lines = ['| | nested (one run) | dedicated (sum)' + note + ' | dedicated / nested |', '|---|---:|---:|---:|']
    for key, label, scale in (('train_minutes', 'training + validation minutes (logs.csv)', 1),
                              ('wall_seconds', 'wall minutes of the whole command', 60),
                              ('cpu_seconds', 'CPU minutes of the whole command', 60),
                              ('parameters', 'parameters stored', None)):
        n, d = nested.get(key), total(dedicated, key)
        if n is None or d is None:
            continue
        fmt = (lambda v: f'{v:,}') if scale is None else (lambda v, s=scale: f'{v / s:.1f}')
        lines.append(f'| {label} | {fmt(n)} | {fmt(d)} | {d / n:.2f}x |')
    return lines


def report(options):
    results = {}
    for name in ROWS:
        folder = row_folder(name, options)
        if (folder / 'args.yaml').exists():
            results[name] = row_result(name, folder)
    if not results:
        raise SystemExit(f'error: no row has started under {options.out}/; run `python {__file__} run` first')
    parts = []
    for group in GROUPS:
        if not any(name.startswith(group + '_') for name in results):
            continue
        parts.append(f'#### {group}: nested slice against a dedicated model, test (released protocol)\n\n'
                     + '\n'.join(size_lines(group, results)) + '\n\n' + target_line(group, results))
        for title, lines in (('NDCG@10 by popularity of the test target', bucket_lines(group, results)),
                             ('Training cost', cost_lines(group, results))):
            if lines:
                parts.append(f'{group}, {title}:\n\n' + '\n'.join(lines))
    return write_report(options.out, 'nested_dedicated', '\n\n'.join(parts), list(results.values()))


def run(options):
    names = options.rows or ROWS
    if options.nested_from:  # the table's nested rows are read, never trained here
        names = [n for n in names if split_row(n)[1] is not None or not is_finished(row_folder(n, options))]
    return run_rows(names, options.out, lambda name: row_command(name, options),
                    lambda folder: is_finished(row_folder(Path(folder).name, options)),
                    jobs=options.jobs, threads=options.threads, poll=options.poll)


def list_rows(options):
    for name in ROWS:
        print(f'{name:24s} {row_state(row_folder(name, options), is_finished)}')
        if options.verbose:
            print('    ' + row_command(name, options)[-1])
    return 0


def main(argv=None):
    parser = study_parser(__doc__, REPO.parent / 'study' / 'nested')
    parser.add_argument('--nested_from', default=None,
                        help="a three-dataset table's folder whose <code>_<kind> runs are the nested rows")
    options = parse_study_options(parser, sys.argv[1:] if argv is None else argv, ROWS)
    return {'run': run, 'report': report, 'list': list_rows}[options.command](options)


if __name__ == '__main__':
    sys.exit(main())
