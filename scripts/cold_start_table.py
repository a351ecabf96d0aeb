"""New items on real data: ID-only, text-only, today's hybrid and its remedies under the cold-start protocol.

    python scripts/cold_start_table.py run [--jobs 1] [ROW ...]   # train (and test) the rows not finished
    python scripts/cold_start_table.py report                      # the table (markdown and JSON)
    python scripts/cold_start_table.py list [--verbose]            # rows, their state, their commands
    python scripts/cold_start_table.py boost [ROW ...]             # finished rows with features: the new-item
                                                                   # boost chosen on validation (eval.py)

A row is the three-dataset table's row of its kind (scripts/dataset_table.py: the dataset's preset, D =
256, dropout 0.1, lr 3e-3, a 10-epoch cosine budget, whitened MiniLM text) trained with `--cold_start`:
5% of the items (seed 0) are held out of training entirely and the test reports, beside the usual
metrics, the users whose test target is one of them (datasets/cold_start.py; docs/content_features.md,
Cold start). The hybrid's remedies are training-only options (model/fmrlrec.py): `_iddrop` drops each
item's ID row with probability 0.3 per step (`_iddrop60`, `_iddrop80`: 0.6 and 0.8), `_content` adds
the loss of the projected features alone (weight 1), `_both` does 0.3 and 1. A row is finished when
its cold-start file exists. `boost` runs `eval.py --new_item_boost auto` (evaluation/new_item_boost.py)
on each finished row with features that lacks its file; the report then adds the boosted numbers. Run folders: `<--out>/<row>`; text features come from
`<--out>/../features/<code>` (built there on first use).
Results: RESULTS.md, "New items".
"""
import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `python scripts/cold_start_table.py` runs from anywhere

from runs.run_folder import COLD_START_FILE, METRICS_FILE, POPULARITY_FILE, new_item_boost_path  # noqa: E402
from scripts.dataset_table import CONFIGURATION, REPRESENTATION_OPTIONS  # noqa: E402
from scripts.study_rows import parse_study_options, read_log, row_state, run_rows, study_parser, write_report  # noqa: E402

REMEDIES = {
    '': [],
    '_iddrop': ['--id_dropout', '0.3'],
    '_iddrop60': ['--id_dropout', '0.6'],
    '_iddrop80': ['--id_dropout', '0.8'],
    '_content': ['--content_loss_weight', '1.0'],
    '_both': ['--id_dropout', '0.3', '--content_loss_weight', '1.0'],
}
KINDS = ['text', 'id'] + [f'hybrid{remedy}' for remedy in REMEDIES]
DATASETS = ('beauty', 'sports', 'clothing')
ROWS = [f'{code}_{kind}' for code in DATASETS for kind in KINDS]
PROTOCOL = ['--cold_start', '--cold_start_share', '0.05', '--cold_start_seed', '0']


def split_row(name):
    code, kind = name.split('_', 1)
    return code, kind


def train_argv(name, options):
    code, kind = split_row(name)
    base, remedy = ('hybrid', kind[len('hybrid'):]) if kind.startswith('hybrid') else (kind, '')
    argv = ['--config', str(REPO / 'presets' / f'{code}.yaml'), '--data_root', options.data_root] + CONFIGURATION
    if base != 'id':
        argv += ['--language_encoder', options.language_encoder,
                 '--feature_dir', str(Path(options.out).parent / 'features' / code)]
    return (argv + REPRESENTATION_OPTIONS[base] + REMEDIES[remedy] + PROTOCOL
            + ['--resume', 'auto', '--export_root', str(Path(options.out) / name)])


def row_command(name, options):
    return [sys.executable, 'train.py'] + train_argv(name, options)


def is_finished(folder):
    return (Path(folder) / f'{COLD_START_FILE}.json').exists()


def row_result(name, folder):
    folder = Path(folder)
    log = read_log(folder)
    code, kind = split_row(name)
    result = {'row': name, 'dataset': code, 'kind': kind, 'epochs': len(log), 'finished': is_finished(folder)}
    if log:
        best = max(log, key=lambda r: float(r['val_NDCG@10']))
        result.update(best_epoch=int(best['epoch']), minutes=sum(float(r['seconds']) for r in log) / 60)
    if is_finished(folder):
        overall = json.loads((folder / f'{METRICS_FILE}.json').read_text())
        cold = json.loads((folder / f'{COLD_START_FILE}.json').read_text())
        size = str(max(int(s) for s in cold['by_size']))
        result.update(size=int(size), overall=overall[size], cold=cold['by_size'][size], cold_users=cold['users'],
                      all_users=cold['all_users'], held_out_items=cold['held_out_items'])
        popularity = json.loads((folder / f'{POPULARITY_FILE}.json').read_text())
        result.update(never_target_in_catalogue(popularity, cold, size))
        if new_item_boost_path(folder).exists():
            boost = json.loads(new_item_boost_path(folder).read_text())
            result['boosted'] = {'boost': boost['boosts'][size], 'tolerance': boost.get('tolerance'),
                                 **boost['test']['by_size'][size]['boosted']}
    return result


def never_target_in_catalogue(popularity, cold, size):
    """The users of bucket 0 whose target is NOT held out: items that were in the catalogue (and the
    softmax) while training but never a training target. Bucket 0 holds both kinds, so their metrics
    are bucket 0's sums less the held-out users' sums."""
    users = popularity['users']['0'] - cold['users']
    values = {}
    if users > 0:
        bucket, held = popularity['by_size'][size]['0'], cold['by_size'][size]
        for name in ('NDCG@10', 'Recall@10'):
            held_sum = held[name] * cold['users'] if cold['users'] else 0.0
            values[name] = (bucket[name] * popularity['users']['0'] - held_sum) / users
    return {'never_target_users': users, 'never_target': values}


def dataset_markdown(code, results):
    rows = [r for r in results if r['dataset'] == code and r['finished']]
    if not rows:
        return ''
    by_kind = {r['kind']: r for r in rows}
    first = rows[0]
    lines = [f"#### {code}: {first['held_out_items']:,} items held out; {first['cold_users']:,} of "
             f"{first['all_users']:,} test users have one as their target (size {first['size']})", '',
             '| row | overall NDCG@10 | overall Recall@10 | x hybrid (NDCG) | held-out NDCG@10 | held-out Recall@10 '
             f"| x text-only (Recall) | never a target, in training's catalogue ({first['never_target_users']:,} users): "
             'NDCG@10 / Recall@10 | best epoch |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for kind in KINDS:
        r = by_kind.get(kind)
        if r is None:
            continue
        hybrid = by_kind.get('hybrid', {}).get('overall', {}).get('NDCG@10')
        text = by_kind.get('text', {}).get('cold', {}).get('Recall@10')
        versus_hybrid = f"{r['overall']['NDCG@10'] / hybrid:.3f}x" if hybrid else '–'
        versus_text = f"{r['cold']['Recall@10'] / text:.2f}x" if text else '–'
        lines.append(f"| {kind} | {r['overall']['NDCG@10']:.4f} | {r['overall']['Recall@10']:.4f} | {versus_hybrid} | "
                     f"{r['cold']['NDCG@10']:.4f} | {r['cold']['Recall@10']:.4f} | {versus_text} | "
                     f"{_pair(r['never_target'])} | {r.get('best_epoch', '–')} |")
    return '\n'.join(lines + boosted_markdown(rows, by_kind))


def boosted_markdown(rows, by_kind):
    """The rows eval.py --new_item_boost tested: the boost at the largest size (chosen on validation), overall and
    held-out metrics with it, against today's hybrid overall and text-only's unboosted held-out Recall@10."""
    boosted = [r for r in rows if 'boosted' in r]
    if not boosted:
        return []
    hybrid = by_kind.get('hybrid', {}).get('overall', {}).get('NDCG@10')
    text = by_kind.get('text', {}).get('cold', {}).get('Recall@10')
    lines = ['', f"With the new-item boost chosen on validation (eval.py --new_item_boost auto, tolerance "
             f"{boosted[0]['boosted']['tolerance']}), size {boosted[0]['size']}:", '',
             '| row | boost | overall NDCG@10 | x hybrid (NDCG) | held-out NDCG@10 | held-out Recall@10 | x text-only, '
             'unboosted (Recall) |', '|---|---:|---:|---:|---:|---:|---:|']
    for r in boosted:
        b = r['boosted']
        versus_hybrid = f"{b['all']['NDCG@10'] / hybrid:.3f}x" if hybrid else '–'
        versus_text = f"{b['held_out']['Recall@10'] / text:.2f}x" if text else '–'
        lines.append(f"| {r['kind']} | {b['boost']:g} | {b['all']['NDCG@10']:.4f} | {versus_hybrid} | "
                     f"{b['held_out']['NDCG@10']:.4f} | {b['held_out']['Recall@10']:.4f} | {versus_text} |")
    return lines


def boost_rows(names, options):
    """eval.py --new_item_boost auto on each finished row with features that has no boost file yet."""
    for name in names:
        folder = Path(options.out) / name
        if split_row(name)[1] == 'id' or not is_finished(folder) or new_item_boost_path(folder).exists():
            continue
        print(f'{name}: eval.py --new_item_boost auto', flush=True)
        command = [sys.executable, str(REPO / 'eval.py'), '--export_root', str(folder), '--new_item_boost', 'auto',
                   '--threads', str(options.threads)]
        if subprocess.run(command, cwd=REPO).returncode != 0:
            print(f'{name}: eval.py failed (its output is above)', flush=True)
            return 1
    return 0


def _pair(values):
    # bucket 0 less the held-out users' sums: rounding can leave -0.0000 where the metric is 0
    return f"{abs(values['NDCG@10']):.4f} / {abs(values['Recall@10']):.4f}" if values else '–'


def main(argv=None):
    parser = study_parser(__doc__, REPO.parent / 'study' / 'cold_start', extra_commands=('boost',))
    options = parse_study_options(parser, sys.argv[1:] if argv is None else argv, ROWS)
    names = options.rows or ROWS
    if options.command == 'run':
        return run_rows(names, options.out, lambda name: row_command(name, options), is_finished, options.jobs,
                        options.threads, options.poll)
    if options.command == 'boost':
        return boost_rows(names, options)
    if options.command == 'list':
        for name in names:
            print(f'{name:24s} {row_state(Path(options.out) / name, is_finished)}')
            if options.verbose:
                print('    ' + ' '.join(shlex.quote(a) for a in row_command(name, options)))
        return 0
    results = [row_result(name, Path(options.out) / name) for name in names]
    markdown = '\n\n'.join(part for part in (dataset_markdown(code, results) for code in DATASETS) if part)
    return write_report(options.out, 'cold_start_table', markdown or 'no row is finished yet', results)


if __name__ == '__main__':
    raise SystemExit(main())
