"""The demo's wall time alone, beside a busy process, and two at once, under OpenMP waiting policies.

    python benchmarks/shared_machine.py                         # default, passive and bounded-spin policies
    python benchmarks/shared_machine.py --policies default,passive --json

Each measurement is a whole `python train.py --dataset_code demo` (the README's first command, in a
temporary folder), so it includes what a user waits for: start-up, data, training, validation and
the test. Scenarios:
- alone: nothing else runs;
- beside one busy process: a single-thread Python loop spins on one core meanwhile (a neighbour's job);
- two at once: two demos start together (two seeds side by side), each timed.
A policy is the environment the demo starts with: `entry` (nothing set: train.py chooses the waiting
at start, utils/omp_policy.py, and its thread count then follows the load, utils/thread_governor.py),
`entry_fixed` (the same start, but the thread count kept: FMRLREC_ADAPTIVE_THREADS=0), `openmp_default`
(GOMP_SPINCOUNT=300000, OpenMP's own spinning: what ran before),
`passive` (OMP_WAIT_POLICY=PASSIVE: threads sleep at once), `spin<N>` (GOMP_SPINCOUNT=N: spin N
iterations, then sleep). The table gives each wall time and its ratio to the demo alone under
`openmp_default`. Run it on an otherwise quiet machine; the hardware is printed with it.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POLICY_VARIABLES = ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME', 'FMRLREC_ADAPTIVE_THREADS')


def policy_environment(policy):
    env = {k: v for k, v in os.environ.items() if k not in POLICY_VARIABLES + ('OMP_NUM_THREADS',)}
    env['HF_HUB_OFFLINE'] = '1'
    if policy == 'passive':
        env['OMP_WAIT_POLICY'] = 'PASSIVE'
    elif policy == 'openmp_default':
        env['GOMP_SPINCOUNT'] = '300000'  # libgomp's own spin count: what ran before utils/omp_policy.py
    elif policy == 'entry_fixed':
        env['FMRLREC_ADAPTIVE_THREADS'] = '0'
    elif policy.startswith('spin'):
        env['GOMP_SPINCOUNT'] = policy[len('spin'):]
    elif policy != 'entry':
        raise SystemExit(f'error: unknown policy {policy!r}: entry, entry_fixed, openmp_default, passive or spin<N>')
    return env


def start_demo(policy, folder, data_root, extra):
    command = [sys.executable, 'train.py', '--dataset_code', 'demo', '--data_root', str(data_root),
               '--export_root', str(folder), '--no-use_tensorboard', *extra]
    return subprocess.Popen(command, cwd=REPO, env=policy_environment(policy), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True), time.perf_counter()


def finish(process, started):
    _, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f'error: the demo failed: {(err.strip().splitlines() or ["?"])[-1]}')
    return time.perf_counter() - started


def scenario(name, policy, work, data_root, extra):
    """Wall seconds of each demo of one scenario."""
    busy = None
    if name == 'beside_busy':
        busy = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
        time.sleep(1.0)
    try:
        count = 2 if name == 'two_at_once' else 1
        runs = [start_demo(policy, work / f'{name}_{policy}_{k}', data_root, extra) for k in range(count)]
        return [finish(*run) for run in runs]
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--policies', default='entry,openmp_default,passive')
    parser.add_argument('--scenarios', default='alone,beside_busy,two_at_once')
    parser.add_argument('--train_args', default='', help='extra train.py arguments (e.g. "--num_epochs 1" for a check)')
    parser.add_argument('--json', action='store_true')
    options = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from benchmarks.hardware import allocator
    from utils.cpu_probe import cpu_summary
    extra = options.train_args.split()
    results = []
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        data_root = work / 'data'
        # The demo data are generated once, outside the timings.
        subprocess.run([sys.executable, '-c', f'from datasets.demo import ensure_demo; ensure_demo({str(data_root / "demo")!r}, seed=0)'],
                       cwd=REPO, check=True, env=policy_environment('passive'), stderr=subprocess.DEVNULL)
        for name in options.scenarios.split(','):
            for policy in options.policies.split(','):
                seconds = scenario(name, policy, work, data_root, extra)
                results.append({'scenario': name, 'policy': policy, 'seconds': seconds})
                print(f'{name:12s} {policy:10s} ' + ' '.join(f'{s:.1f}s' for s in seconds), file=sys.stderr, flush=True)
    base = next((r['seconds'][0] for r in results if r['scenario'] == 'alone' and r['policy'] == 'openmp_default'), None)
    summary = {'cpu': cpu_summary(), 'cores': len(os.sched_getaffinity(0)), 'allocator': allocator(),
               'load_average_at_end': os.getloadavg()[0], 'train_args': extra, 'results': results,
               'alone_default_seconds': base}
    if options.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['cpu']['model']} ({summary['cpu']['torch_capability']}), {summary['cores']} cores, "
          f"{summary['allocator']}")
    print('| scenario | policy | wall s (each demo) | x alone, openmp_default |\n|---|---|---:|---:|')
    for r in results:
        ratios = ' / '.join(f'{s / base:.2f}x' for s in r['seconds']) if base else '–'
        print(f"| {r['scenario']} | {r['policy']} | {' / '.join(f'{s:.1f}' for s in r['seconds'])} | {ratios} |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
