"""Collect every finished run under experiments/ into one markdown table next to the paper's rows.

    python scripts/results_table.py [--root experiments] [--out results.md] [--curves]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python scripts/results_table.py` runs from anywhere

from runs.run_results import find_summaries, results_markdown, training_curve_markdown  # noqa: E402
from utils.io import atomic_write_text  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', default='experiments', help='folder searched for run folders')
    p.add_argument('--out', default=None, help='also write the table to this file')
    p.add_argument('--curves', action='store_true', help="also each run's per-epoch loss and validation NDCG@10")
    options = p.parse_args(sys.argv[1:] if argv is None else argv)
    summaries = find_summaries(options.root)
    if not summaries:
        print(f'no finished run (with test_mrl_metrics.json) under {options.root}/')
        return ''
    table = results_markdown(summaries)
    if options.curves:
        table += ''.join(f"\n\n#### {s['run']}: training curve\n\n{training_curve_markdown(s['path'])}" for s in summaries)
    print(table)
    if options.out:
        atomic_write_text(options.out, table + '\n')
    return table


if __name__ == '__main__':
    main()
