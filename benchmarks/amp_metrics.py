"""Effect of `--amp bf16` (and optionally `--compile`) on what a trained model scores: the demo is
trained once per setting with the same seed, and the test metrics of the largest and smallest
sizes are compared. Speed is measured by benchmarks/train_throughput.py; this is about metrics.

    python benchmarks/amp_metrics.py                 # fp32 against bf16, a markdown table
    python benchmarks/amp_metrics.py --compile       # adds a torch.compile run

Where bf16 is not native (utils/cpu_probe.py), --amp bf16 trains in fp32 and there is nothing to
compare: the script stops with one line (FMRLREC_CPU_BF16=native compares emulated bf16, slowly).
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `python benchmarks/amp_metrics.py` runs from anywhere

from utils.runtime import bf16_is_native  # noqa: E402  (after the path set-up)
METRICS = ('NDCG@10', 'Recall@10', 'MRR@10')


def train_once(data_root, run_dir, extra, epochs, sizes):
    command = [sys.executable, str(REPO / 'train.py'), '--dataset_code', 'demo', '--data_root', str(data_root),
               '--export_root', str(run_dir), '--num_epochs', str(epochs), '--mrl_hidden_sizes', sizes,
               '--use_tensorboard', 'False'] + extra
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f'{" ".join(command)} failed:\n{done.stderr[-3000:]}')
    metrics = json.loads((run_dir / 'test_mrl_metrics.json').read_text())
    return metrics, time.time() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--sizes', type=str, default='8,16,32,64')
    parser.add_argument('--compile', action='store_true', help='also train with --compile')
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')  # train.py's --device auto
    native, reason = bf16_is_native(device)
    if not native:
        raise SystemExit(f'bf16 is not native here: {reason}; --amp bf16 would train in fp32, nothing to compare')
    settings = {'fp32': [], 'bf16': ['--amp', 'bf16']}
    if args.compile:
        settings['fp32 compiled'] = ['--compile']
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for name, extra in settings.items():
            metrics, seconds = train_once(scratch / 'data', scratch / name.replace(' ', '_'), extra, args.epochs,
                                          args.sizes)
            results[name] = {'seconds': round(seconds, 1), 'metrics': metrics}
            print(f'{name}: {seconds:.0f}s', file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(results, indent=1))
        return results
    sizes = list(results['fp32']['metrics'])
    print(f'demo, {args.epochs} epochs, seed 42; test metrics of the best checkpoint\n')
    print('| setting | wall s | ' + ' | '.join(f'{m} @{s}' for s in (sizes[0], sizes[-1]) for m in METRICS) + ' |')
    print('|---|---|' + '---|' * (2 * len(METRICS)))
    for name, result in results.items():
        values = [result['metrics'][s][m] for s in (sizes[0], sizes[-1]) for m in METRICS]
        print(f"| {name} | {result['seconds']:.0f} | " + ' | '.join(f'{v:.4f}' for v in values) + ' |')
    return results


if __name__ == '__main__':
    main()
