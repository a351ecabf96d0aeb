"""How a training step and an evaluation pass grow with the catalogue: time and peak memory by N.

    python benchmarks/catalogue_scaling.py                       # 12k, 100k, 1M items; D 256, 1024; text, id
    python benchmarks/catalogue_scaling.py --items 12101,100000 --widths 256 --kinds text --json

Each (items, D, kind) runs in a fresh process (`--probe`), so that its peak resident set (VmHWM)
is its own: Beauty-shaped sequences (benchmarks/synthetic.py) over N items, a text-only model on a
384-d feature table (the offline MiniLM's width) or an ID-only model, sizes 8..D, one block, batch
32. It times one warm-up and then `--steps` training steps (the trainer's own: AdamW, clipping; the
loss chunks the catalogue by itself when its log-probabilities would not fit, model/chunked_loss.py)
and one evaluation pass over `--eval_users` users, and records the peak after training and after
evaluation. The parent prints a table and the growth of each figure per 10x items. A configuration
whose item table and optimizer state alone would not fit in the free memory is skipped and said so.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `python benchmarks/catalogue_scaling.py` runs from anywhere

TEXT_DIM = 384


def probe(items, width, kind, steps, eval_users, users):
    """One configuration in this process; returns its JSON record."""
    import torch

    from benchmarks.memory_probe import load_framework, peak_rss_mib
    from benchmarks.synthetic import beauty_like_splits, feature_table
    from benchmarks.workloads import fast_eval, fast_step, make_trainer
    from model.chunked_loss import item_chunk_for
    from model.fmrlrec import FMRLRec

    framework = load_framework()
    sizes = [s for s in (8, 16, 32, 64, 128, 256, 512, 1024) if s <= width]
    splits = beauty_like_splits(users, items)
    torch.manual_seed(0)
    text = feature_table(items, TEXT_DIM, torch.Generator().manual_seed(0)) if kind == 'text' else None
    model = FMRLRec(items, sizes, text, None, num_blocks=1, dropout=0.1, attn_dropout=0.1)
    trainer = make_trainer(model, splits, sizes, 32, 'cpu')
    setup = peak_rss_mib()
    order = torch.randperm(len(trainer.tokens), generator=torch.Generator().manual_seed(1))
    seconds, cpu_seconds = [], []
    for step in range(steps + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        fast_step(trainer, order[step * 32:(step + 1) * 32], 'none')
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu_started)
    train_peak = peak_rss_mib()
    rows = int((trainer.labels[order[:32]] > 0).sum())
    chunk = item_chunk_for(len(sizes), rows + (-rows % 32), items + 1, 'cpu')
    model.eval()
    started, cpu_started = time.perf_counter(), time.process_time()
    fast_eval(model, splits['val'], len(sizes), 64, 'cpu', 'none', users=eval_users)
    eval_seconds, eval_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {'items': items, 'width': width, 'kind': kind, 'threads': torch.get_num_threads(),
            'step_seconds': statistics.median(seconds[1:]), 'step_seconds_all': seconds[1:],
            'step_cpu_seconds': statistics.median(cpu_seconds[1:]),
            'eval_users': eval_users, 'eval_seconds': eval_seconds, 'eval_cpu_seconds': eval_cpu,
            'eval_users_per_s': eval_users / eval_seconds,
            'loss_item_chunk': chunk, 'framework_mib': framework, 'setup_peak_mib': setup,
            'train_peak_mib': train_peak, 'peak_mib': peak_rss_mib()}


def state_bytes(items, width, kind):
    """The item table's training state that any method needs: an ID table, its gradient and two
    AdamW moments (ID-only); the frozen features (text). Used to skip what cannot fit."""
    return (items + 1) * (4 * width if kind == 'id' else TEXT_DIM) * 4


def available_bytes():
    with open('/proc/meminfo') as handle:
        for line in handle:
            if line.startswith('MemAvailable:'):
                return int(line.split()[1]) * 1024
    return 0


def run_grid(options):
    records = []
    for kind in options.kinds.split(','):
        for width in [int(w) for w in options.widths.split(',')]:
            for items in [int(n) for n in options.items.split(',')]:
                need = state_bytes(items, width, kind)
                if need > 0.6 * available_bytes():
                    records.append({'items': items, 'width': width, 'kind': kind,
                                    'skipped': f'the item state alone needs {need / 2**30:.1f} GiB, '
                                               f'{available_bytes() / 2**30:.1f} GiB free'})
                    continue
                command = [sys.executable, __file__, '--probe', f'{items},{width},{kind}', '--steps',
                           str(options.steps), '--eval_users', str(options.eval_users), '--users', str(options.users)]
                print(f'{kind} D={width} N={items:,} ...', file=sys.stderr, flush=True)
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    records.append({'items': items, 'width': width, 'kind': kind,
                                    'failed': (done.stderr.strip().splitlines() or ['?'])[-1]})
                    continue
                records.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return records


def growth(records):
    """Per (kind, D): each figure's ratio between consecutive catalogue sizes, beside the items' ratio."""
    out = []
    measured = [r for r in records if 'step_seconds' in r]
    for kind, width in sorted({(r['kind'], r['width']) for r in measured}):
        rows = sorted((r for r in measured if (r['kind'], r['width']) == (kind, width)), key=lambda r: r['items'])
        for small, large in zip(rows, rows[1:]):
            out.append({'kind': kind, 'width': width, 'from': small['items'], 'to': large['items'],
                        'items_ratio': large['items'] / small['items'],
                        'step_ratio': large['step_seconds'] / small['step_seconds'],
                        'step_cpu_ratio': large['step_cpu_seconds'] / small['step_cpu_seconds'],
                        'eval_ratio': large['eval_seconds'] / small['eval_seconds'],
                        'eval_cpu_ratio': large['eval_cpu_seconds'] / small['eval_cpu_seconds'],
                        'memory_ratio': (large['peak_mib'] - large['framework_mib'])
                        / (small['peak_mib'] - small['framework_mib'])})
    return out


def table(records, ratios):
    lines = ['| kind | D | items | step s (CPU s) | eval users/s (CPU s per user) | loss chunk | peak MiB (train) | '
             'peak MiB (train + eval) |', '|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in records:
        head = f"| {r['kind']} | {r['width']} | {r['items']:,} |"
        if 'step_seconds' not in r:
            lines.append(head + f" {r.get('skipped') or 'failed: ' + r['failed']} | | | | |")
            continue
        chunk = f"{r['loss_item_chunk']:,}" if r['loss_item_chunk'] else 'none'
        lines.append(head + f" {r['step_seconds']:.3f} ({r['step_cpu_seconds']:.3f}) | {r['eval_users_per_s']:.0f} "
                            f"({r['eval_cpu_seconds'] / r['eval_users']:.4f}) | {chunk} | "
                            f"{r['train_peak_mib']:,.0f} | {r['peak_mib']:,.0f} |")
    lines += ['', '| kind | D | items | x items | x step time (CPU) | x eval time (CPU) | x memory above torch |',
              '|---|---:|---|---:|---:|---:|---:|']
    for g in ratios:
        lines.append(f"| {g['kind']} | {g['width']} | {g['from']:,} -> {g['to']:,} | {g['items_ratio']:.1f} | "
                     f"{g['step_ratio']:.2f} ({g['step_cpu_ratio']:.2f}) | {g['eval_ratio']:.2f} "
                     f"({g['eval_cpu_ratio']:.2f}) | {g['memory_ratio']:.2f} |")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--items', default='12101,100000,1000000')
    parser.add_argument('--widths', default='256,1024')
    parser.add_argument('--kinds', default='text,id')
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--eval_users', type=int, default=512)
    parser.add_argument('--users', type=int, default=22_363, help="Beauty's users")
    parser.add_argument('--json', action='store_true', help='one JSON object instead of the table')
    parser.add_argument('--probe', default=None, help=argparse.SUPPRESS)  # ITEMS,D,KIND: one child
    options = parser.parse_args(argv)
    if options.probe:
        items, width, kind = options.probe.split(',')
        print(json.dumps(probe(int(items), int(width), kind, options.steps, options.eval_users, options.users)))
        return 0
    from benchmarks.hardware import hardware
    import torch
    records = run_grid(options)
    result = {'hardware': hardware(torch.device('cpu'), [8, 16]), 'records': records, 'growth': growth(records),
              'omp_num_threads': os.environ.get('OMP_NUM_THREADS')}
    print(json.dumps(result, indent=2) if options.json else table(records, result['growth']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
