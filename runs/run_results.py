"""Collect finished runs (their run folders) into markdown tables next to the paper's rows."""
import csv
from pathlib import Path

from datasets.features import modality_name
from runs.run_folder import find_tested_runs, log_path, read_saved_config, read_test_metrics
from utils.paper import PAPER_COLUMNS, paper_reference


def modality_of(config):
    return modality_name(config.get('use_language_encoder'), config.get('use_img_encoder'))


def relative_difference(ours, theirs):
    return f'{100 * (ours - theirs) / theirs:+.1f}%' if theirs else 'n/a'


def run_summary(run):
    """Facts about one finished run folder, or None when it has no test results."""
    run = Path(run)
    by_size = read_test_metrics(run)
    config = read_saved_config(run)
    if by_size is None or config is None:
        return None
    largest = str(max(int(s) for s in by_size))
    seconds, epochs, best_epoch, best = 0.0, 0, None, -1.0
    log = log_path(run)
    if log.exists():
        with open(log, newline='') as handle:
            for row in csv.DictReader(handle):
                epochs = int(row['epoch'])
                seconds += float(row.get('seconds') or 0)
                value = float(row.get(f"val_{config.get('best_metric', 'NDCG@10')}") or -1)
                if value > best:
                    best, best_epoch = value, epochs
    masked = read_test_metrics(run, '_masked')
    return {
        'run': run.name, 'path': str(run), 'dataset': config.get('dataset_code'), 'modality': modality_of(config),
        'encoder': config.get('language_encoder') if config.get('use_language_encoder') else None,
        'D': int(largest), 'blocks': config.get('lru_num_blocks'), 'lr': config.get('lr'),
        'mask_history': bool(config.get('mask_history')), 'epochs': epochs, 'best_epoch': best_epoch,
        'train_minutes': seconds / 60, 'metrics': by_size[largest], 'by_size': by_size,
        'masked_metrics': masked[largest] if masked is not None else None,
    }


def find_summaries(root):
    summaries = [run_summary(run) for run in find_tested_runs(root)]
    return [s for s in summaries if s is not None]


def results_markdown(summaries):
    header = ('| run | dataset | features | D | blocks | epochs (best) | train min | '
              + ' | '.join(PAPER_COLUMNS) + ' | paper row | ' + ' | '.join(f'paper {c}' for c in PAPER_COLUMNS) + ' |')
    lines = [header, '|' + '---|' * (header.count('|') - 1)]
    for s in summaries:
        label, paper = paper_reference(s['dataset'], s['modality'])
        ours = ' | '.join(f"{s['metrics'][c]:.4f}" for c in PAPER_COLUMNS)
        theirs = ' | '.join(f"{paper[c]:.4f} ({relative_difference(s['metrics'][c], paper[c])})"
                            if paper and c in paper else '–' for c in PAPER_COLUMNS)
        lines.append(f"| {s['run']} | {s['dataset']} | {s['modality']} | {s['D']} | {s['blocks']} | "
                     f"{s['epochs']} ({s['best_epoch']}) | {s['train_minutes']:.1f} | {ours} | {label or '–'} | {theirs} |")
    return '\n'.join(lines)


def comparison_markdown(summary):
    """Per-size table of one run plus its row against the paper."""
    lines = [f"### {summary['dataset']} ({summary['modality']}), run `{summary['run']}`", '',
             '| size | ' + ' | '.join(PAPER_COLUMNS) + ' |', '|---:|' + '---:|' * len(PAPER_COLUMNS)]
    for size, metrics in sorted(summary['by_size'].items(), key=lambda kv: int(kv[0])):
        lines.append(f'| {size} | ' + ' | '.join(f'{metrics[c]:.4f}' for c in PAPER_COLUMNS) + ' |')
    label, paper = paper_reference(summary['dataset'], summary['modality'])
    if paper:
        lines += ['', f"Largest size (D={summary['D']}) against {label}:", '',
                  '| metric | ours | paper | difference |', '|---|---:|---:|---:|']
        for c in PAPER_COLUMNS:
            if c in paper:
                lines.append(f"| {c} | {summary['metrics'][c]:.4f} | {paper[c]:.4f} | "
                             f"{relative_difference(summary['metrics'][c], paper[c])} |")
    return '\n'.join(lines)


def training_curve_markdown(run, sizes_to_show=3):
    """Per-epoch training loss and validation NDCG@10 (largest and a few smaller sizes) from logs.csv."""
    log = log_path(run)
    if not log.exists():
        return ''
    with open(log, newline='') as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return ''
    size_columns = [c for c in rows[0] if c.startswith('val_NDCG@10@size')]
    shown = size_columns[-sizes_to_show:]
    header = '| epoch | train loss | val Recall@10 | val NDCG@10 | ' + ' | '.join(
        f"NDCG@10 size {c.rsplit('size', 1)[1]}" for c in shown) + ' | seconds |'
    lines = [header, '|' + '---:|' * (header.count('|') - 1)]
    for row in rows:
        lines.append(f"| {row['epoch']} | {float(row['train_loss']):.4f} | {float(row['val_Recall@10']):.4f} | "
                     f"{float(row['val_NDCG@10']):.4f} | " + ' | '.join(f'{float(row[c]):.4f}' for c in shown)
                     + f" | {float(row['seconds']):.0f} |")
    return '\n'.join(lines)
