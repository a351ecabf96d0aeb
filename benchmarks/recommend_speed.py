"""Recommendation throughput (users per second) of an exported size-s model on this machine.

    python -m benchmarks.recommend_speed --model model_64.pt              # a real export
    python -m benchmarks.recommend_speed --num_items 12101 --size 64      # Beauty-shaped synthetic

Histories are random items with Beauty-like lengths (at least 4, mean about 8). Two figures:
'top-k' = Recommender.top_k alone (inputs, model, scores, history exclusion, top-k);
'end to end' = also parsing the history strings and building the JSON lines recommend.py prints.
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python benchmarks/recommend_speed.py` too

from deploy.catalogue import Catalogue  # noqa: E402  (after the path set-up)
from deploy.export_format import build_export, export_bytes, load_export  # noqa: E402
from deploy.recommender import Recommender  # noqa: E402
from model import FMRLRec  # noqa: E402


def synthetic_export(num_items, size, num_blocks, max_len, seed=0):
    """An export of a random ID-table model of width `size` (the scoring cost does not depend on
    the weights' values, only on the shapes)."""
    torch.manual_seed(seed)
    sizes = [s for s in (8, 16, 32, 64, 128, 256, 512, 1024, 2048) if s < size] + [size]
    model = FMRLRec(num_items, sizes, num_blocks=num_blocks).eval()
    catalogue = Catalogue([''] + [f'B{i:09d}' for i in range(1, num_items + 1)],
                          [None] + [f'Synthetic item {i}' for i in range(1, num_items + 1)])
    path = Path(tempfile.mkdtemp()) / f'synthetic_{size}.pt'
    path.write_bytes(export_bytes(build_export(model, size, catalogue, max_len)))
    return path


def random_histories(num_users, num_items, seed=0):
    rng = np.random.default_rng(seed)
    lengths = 4 + rng.geometric(1 / 4.9, size=num_users)  # min 4, mean about 8.9
    return [rng.integers(1, num_items + 1, size=n).tolist() for n in lengths]


def timed(function, repeats):
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', help='an export file; without it a synthetic model is built')
    p.add_argument('--num_items', type=int, default=12101, help='synthetic: catalogue size (Beauty: 12,101)')
    p.add_argument('--size', type=int, default=64, help='synthetic: model width')
    p.add_argument('--num_blocks', type=int, default=1, help='synthetic: LRU blocks')
    p.add_argument('--users', type=int, default=10000)
    p.add_argument('--batch_size', type=int, default=256)
    p.add_argument('--k', type=int, default=10)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s choice)')
    options = p.parse_args(sys.argv[1:] if argv is None else argv)
    if options.threads:
        torch.set_num_threads(options.threads)
    path = Path(options.model) if options.model else synthetic_export(options.num_items, options.size,
                                                                        options.num_blocks, 50)
    exported = load_export(path)
    recommender = Recommender(exported)
    histories = random_histories(options.users, recommender.num_items)
    texts = [','.join(exported.asins[i] for i in h) for h in histories]
    recommender.top_k(histories[:options.batch_size], options.k)  # warm-up

    def top_k_only():
        recommender.top_k(histories, options.k, batch_size=options.batch_size)

    def end_to_end():
        parsed = [recommender.parse_history(t) for t in texts]
        items, values = recommender.top_k(parsed, options.k, batch_size=options.batch_size)
        return [json.dumps({'user': f'line {n}', 'items': r})  # recommend.py --json's line
                for n, r in enumerate(recommender.records(items, values), start=1)]

    print(f'{path.name}: size {exported.size}, {recommender.num_items:,} items, '
          f'{exported.info["num_blocks"]} block(s), {path.stat().st_size / 1e6:.2f} MB; '
          f'{options.users:,} users (mean history {statistics.mean(map(len, histories)):.1f}), '
          f'batch {options.batch_size}, top-{options.k}, {torch.get_num_threads()} torch threads')
    for name, function in (('top-k', top_k_only), ('end to end', end_to_end)):
        seconds = timed(function, options.repeats)
        print(f'  {name:>10}: {options.users / min(seconds):,.0f} users/s best, '
              f'{options.users / statistics.median(seconds):,.0f} median of {options.repeats}')


if __name__ == '__main__':
    main()
