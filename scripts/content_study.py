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
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `python scripts/content_study.py` runs from anywhere

from scripts.study_rows import (ensure_popularity, parse_study_options, popularity_markdown,  # noqa: E402
                                read_log, row_state, run_rows, study_parser, write_report)

# The cheap configuration: the paper's Beauty preset (2 blocks, r in [0, 0.1], dropout 0.6,
# weight decay 0.01) at D = 64 with lr 1e-3 and a 10-epoch cosine budget (~15 min a row here).
BASE = ['--dataset_code', 'beauty', '--mrl_hidden_sizes', '8,16,32,64', '--lru_num_blocks', '2',
        '--lru_r_min', '0.0', '--lru_r_max', '0.1', '--lru_dropout', '0.6', '--lru_attn_dropout', '0.6',
        '--weight_decay', '0.01', '--lr', '1e-3', '--num_epochs', '10', '--no-use_tensorboard',
        '--use_img_encoder', 'False']
ID_ONLY = ['--use_language_encoder', 'False']
HYBRID = ['--item_id_embedding', 'True']

DROPOUT_01 = ['--lru_dropout', '0.1', '--lru_attn_dropout', '0.1']
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
]
ROW_BY_NAME = {row[0]: row for row in ROWS}


def row_argv(name, options):
    """train.py arguments of one row."""
    _, _, _, change = ROW_BY_NAME[name]
    return (BASE + ['--data_root', options.data_root, '--language_encoder', options.language_encoder,
                    '--feature_dir', options.feature_dir]
            + change + ['--resume', 'auto', '--export_root', str(Path(options.out) / name)])


def is_finished(folder):
    return (Path(folder) / 'test_mrl_metrics.json').exists()


def row_command(name, options):
    return [sys.executable, str(REPO / 'train.py')] + row_argv(name, options)


def run(options):
    names = options.rows or [row[0] for row in ROWS]
    return run_rows(names, options.out, lambda name: row_command(name, options), is_finished,
                    jobs=options.jobs, threads=options.threads, poll=options.poll)


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
                  + popularity_markdown([r['row'] for r in results], by_popularity))
    return write_report(out, 'study', table, results)


def list_rows(options):
    for name, factor, change, _ in ROWS:
        print(f'{name:18s} {row_state(Path(options.out) / name, is_finished):9s} {factor}: {change}')
        if options.verbose:
            print('    python train.py ' + ' '.join(row_argv(name, options)))
    return 0


def main(argv=None):
    parser = study_parser(__doc__, REPO.parent / 'study' / 'runs')
    parser.add_argument('--feature_dir', default=None, help='feature cache (default <out>/../features/beauty)')
    options = parse_study_options(parser, sys.argv[1:] if argv is None else argv, list(ROW_BY_NAME))
    options.feature_dir = options.feature_dir or str(Path(options.out).parent / 'features' / 'beauty')
    return {'run': run, 'report': report, 'list': list_rows}[options.command](options)


if __name__ == '__main__':
    sys.exit(main())
