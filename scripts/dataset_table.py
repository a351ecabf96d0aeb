"""ID-only, text-only and hybrid items on Beauty, Sports and Clothing: nine runs at one configuration.

    python scripts/dataset_table.py run [--jobs 2] [ROW ...]   # train (and test) the rows not finished
    python scripts/dataset_table.py report                      # the tables (markdown and JSON)
    python scripts/dataset_table.py list [--verbose]            # rows, their state, their commands

Each row is the paper's preset for its dataset (presets/<code>.yaml: 2 blocks, r_min, weight decay)
at D = 256 with the content study's best configuration (docs/content_features.md): dropout 0.1,
lr 3e-3, a 10-epoch cosine budget, and whitened MiniLM text features for the text and hybrid rows.
Text differs per dataset with the metadata there is: Beauty title, brand and categories; Sports
brand and categories; Clothing titles (docs/data.md). A row trains with `--resume auto`, is tested
at the end of training (the released protocol, history not masked) and then again with the history
masked (`eval.py --mask_history True`); text-only rows are also tested with every target ranked behind
the items whose text is identical (`eval.py --ties last`, docs/content_features.md, Ties), which
bounds what ties add. A row is finished when all its test files exist. Run folders:
`<--out>/<row>`; text features are built into `<--out>/../features/<code>` on first use.
Long runs belong in the background: `nohup python scripts/dataset_table.py run > table.log &`;
the same command resumes them. Results: RESULTS.md, "Three datasets".
"""
import json
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `python scripts/dataset_table.py` runs from anywhere

from scripts.study_rows import (ensure_popularity, parse_study_options, popularity_markdown,  # noqa: E402
                                read_log, row_state, run_rows, study_parser, write_report)
from utils.paper import PAPER_ABLATIONS, PAPER_FMRLREC, PAPER_LRUREC  # noqa: E402

DATASETS = ('beauty', 'sports', 'clothing')
REPRESENTATIONS = ('id', 'text', 'hybrid')
SIZES = '8,16,32,64,128,256'
# The content study's best configuration (dropout 0.1, lr 3e-3, whitened features) at D = 256.
CONFIGURATION = ['--mrl_hidden_sizes', SIZES, '--lru_dropout', '0.1', '--lru_attn_dropout', '0.1', '--lr', '3e-3',
                 '--num_epochs', '10', '--no-use_tensorboard', '--use_img_encoder', 'False']
REPRESENTATION_OPTIONS = {
    'id': ['--use_language_encoder', 'False'],
    'text': ['--feature_preprocessing', 'whiten'],
    'hybrid': ['--feature_preprocessing', 'whiten', '--item_id_embedding', 'True'],
}
# Training order: Clothing first (where content should matter most), then Beauty, then Sports.
ROWS = [f'{code}_{kind}' for code in ('clothing', 'beauty', 'sports') for kind in ('text', 'id', 'hybrid')]
MASKED_FILE = 'test_mrl_metrics_masked.json'
TIES_LAST_FILE = 'test_mrl_metrics_ties_last.json'


def split_row(name):
    code, kind = name.rsplit('_', 1)
    return code, kind


def train_argv(name, options):
    """train.py arguments of one row."""
    code, kind = split_row(name)
    argv = ['--config', str(REPO / 'presets' / f'{code}.yaml'), '--data_root', options.data_root] + CONFIGURATION
    if kind != 'id':
        argv += ['--language_encoder', options.language_encoder,
                 '--feature_dir', str(Path(options.out).parent / 'features' / code)]
    return argv + REPRESENTATION_OPTIONS[kind] + ['--resume', 'auto', '--export_root', str(Path(options.out) / name)]


def row_command(name, options):
    """Train and test (released protocol), then test again with the history masked (and, for
    text-only rows, with targets behind their ties)."""
    python = shlex.quote(sys.executable)
    folder = shlex.quote(str(Path(options.out) / name))
    steps = [f'{python} train.py ' + ' '.join(shlex.quote(a) for a in train_argv(name, options)),
             f'{python} eval.py --export_root {folder} --mask_history True']
    if split_row(name)[1] == 'text':
        steps.append(f'{python} eval.py --export_root {folder} --ties last')
    return ['bash', '-c', ' && '.join(steps)]


def test_files(name):
    return ['test_mrl_metrics.json', MASKED_FILE] + ([TIES_LAST_FILE] if split_row(name)[1] == 'text' else [])


def is_finished(folder):
    return all((Path(folder) / file).exists() for file in test_files(Path(folder).name))


def paper_rows(code):
    """(label, NDCG@10, Recall@10) of the paper's rows for a dataset."""
    rows = [('paper fMRLRec, text + image, D = 1024 (Table 2)', PAPER_FMRLREC[code])]
    for kind in ('text', 'id'):
        if (code, kind) in PAPER_ABLATIONS:
            rows.append((f'paper fMRLRec {kind} only (ablation)', PAPER_ABLATIONS[(code, kind)]))
    if code in PAPER_LRUREC:
        rows.append(('paper LRURec (ID-based)', PAPER_LRUREC[code]))
    return [(label, m['NDCG@10'], m['Recall@10']) for label, m in rows]


def row_result(name, folder):
    folder = Path(folder)
    log = read_log(folder)
    code, kind = split_row(name)
    result = {'row': name, 'dataset': code, 'representation': kind, 'epochs': len(log),
              'finished': is_finished(folder)}
    if log:
        best = max(log, key=lambda r: float(r['val_NDCG@10']))
        result.update(best_epoch=int(best['epoch']), val_NDCG10=float(best['val_NDCG@10']),
                      final_loss=float(log[-1]['train_loss']), minutes=sum(float(r['seconds']) for r in log) / 60,
                      curve=[float(r['val_NDCG@10']) for r in log])
    for protocol, file in (('released', 'test_mrl_metrics.json'), ('masked', MASKED_FILE),
                           ('ties_last', TIES_LAST_FILE)):
        if (folder / file).exists():
            result[protocol] = json.loads((folder / file).read_text())
    return result


def largest(by_size, metric):
    return by_size[str(max(int(s) for s in by_size))][metric]


def dataset_markdown(code, results):
    """The dataset's rows at the largest size, both protocols, against its ID-only row and the paper."""
    by_kind = {r['representation']: r for r in results if r['dataset'] == code}
    id_ndcg = largest(by_kind['id']['released'], 'NDCG@10') if 'released' in by_kind.get('id', {}) else None
    lines = [f'#### {code}', '',
             '| items | NDCG@10 | Recall@10 | x ID-only | NDCG@10 masked | Recall@10 masked | '
             'NDCG@10, ties last | Recall@10, ties last | epochs (best) | minutes |',
             '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for kind in REPRESENTATIONS:
        r = by_kind.get(kind)
        if r is None:
            lines.append(f'| {kind} | not started | | | | | | | | |')
            continue
        cells = []
        for protocol in ('released', 'masked', 'ties_last'):
            metrics = r.get(protocol)
            cells.append([f'{largest(metrics, m):.4f}' if metrics else '–' for m in ('NDCG@10', 'Recall@10')])
        ratio = (f"{largest(r['released'], 'NDCG@10') / id_ndcg:.2f}x"
                 if id_ndcg and 'released' in r else '–')
        state = '' if r['finished'] else ', running'
        lines.append(f"| {kind} | {cells[0][0]} | {cells[0][1]} | {ratio} | {cells[1][0]} | {cells[1][1]} | "
                     f"{cells[2][0]} | {cells[2][1]} | {r['epochs']} ({r.get('best_epoch', '–')}){state} | "
                     f"{r.get('minutes', 0):.0f} |")
    for label, ndcg, recall in paper_rows(code):
        lines.append(f'| {label} | {ndcg:.4f} | {recall:.4f} | | | | | | | |')
    return '\n'.join(lines)


def sizes_markdown(results, protocol='released'):
    """Test NDCG@10 under `protocol` at every nested size, one column per row tested with it."""
    done = [r for r in results if protocol in r]
    if not done:
        return ''
    sizes = sorted({int(s) for r in done for s in r[protocol]})
    lines = ['| size | ' + ' | '.join(r['row'] for r in done) + ' |', '|---:|' + '---:|' * len(done)]
    for size in sizes:
        lines.append(f'| {size} | ' + ' | '.join(f"{r[protocol][str(size)]['NDCG@10']:.4f}" for r in done) + ' |')
    return '\n'.join(lines)


def curves_markdown(results):
    """Validation NDCG@10 at the largest size per epoch, one column per row."""
    started = [r for r in results if r.get('curve')]
    epochs = max((len(r['curve']) for r in started), default=0)
    lines = ['| epoch | ' + ' | '.join(r['row'] for r in started) + ' |', '|---:|' + '---:|' * len(started)]
    for epoch in range(epochs):
        lines.append(f'| {epoch + 1} | ' + ' | '.join(f"{r['curve'][epoch]:.4f}" if epoch < len(r['curve']) else ''
                                                      for r in started) + ' |')
    return '\n'.join(lines)


def report(options):
    out = Path(options.out)
    results = [row_result(name, out / name) for code in DATASETS for kind in REPRESENTATIONS
               for name in [f'{code}_{kind}'] if (out / name / 'args.yaml').exists()]
    if not results:
        raise SystemExit(f'error: no row has started under {out}/; run `python {__file__} run` first')
    by_popularity = {r['row']: ensure_popularity(out / r['row']) for r in results if r['finished']}
    parts = [dataset_markdown(code, results) for code in DATASETS if any(r['dataset'] == code for r in results)]
    for protocol, label in (('released', 'released protocol'), ('masked', 'history masked')):
        if any(protocol in r for r in results):
            parts.append(f'Test NDCG@10 at every size ({label}):\n\n' + sizes_markdown(results, protocol))
    for code in DATASETS:
        rows = [r['row'] for r in results if r['dataset'] == code and r['row'] in by_popularity]
        if rows:
            parts.append(f'{code}, by popularity of the test target (occurrences among the training targets), '
                         f'largest size:\n\n' + popularity_markdown(rows, by_popularity))
    parts.append('Validation NDCG@10 per epoch (largest size):\n\n' + curves_markdown(results))
    table = '\n\n'.join(parts)
    for r in results:
        r['by_popularity'] = by_popularity.get(r['row'])
    return write_report(out, 'table', table, results)


def run(options):
    names = options.rows or ROWS
    return run_rows(names, options.out, lambda name: row_command(name, options), is_finished,
                    jobs=options.jobs, threads=options.threads, poll=options.poll)


def list_rows(options):
    for name in ROWS:
        print(f'{name:16s} {row_state(Path(options.out) / name, is_finished)}')
        if options.verbose:
            print('    ' + row_command(name, options)[-1])
    return 0


def main(argv=None):
    parser = study_parser(__doc__, REPO.parent / 'study' / 'table')
    options = parse_study_options(parser, sys.argv[1:] if argv is None else argv, ROWS)
    return {'run': run, 'report': report, 'list': list_rows}[options.command](options)


if __name__ == '__main__':
    sys.exit(main())
