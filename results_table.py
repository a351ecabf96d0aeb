"""Collect every finished run under experiments/ into one markdown table next to the paper's rows.

    python results_table.py [--root experiments] [--out results.md]
"""
import argparse
import sys

from utils.io import atomic_write_text
from utils.results import find_summaries, results_markdown


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', default='experiments', help='folder searched for run folders')
    p.add_argument('--out', default=None, help='also write the table to this file')
    options = p.parse_args(sys.argv[1:] if argv is None else argv)
    summaries = find_summaries(options.root)
    if not summaries:
        print(f'no finished run (with test_mrl_metrics.json) under {options.root}/')
        return ''
    table = results_markdown(summaries)
    print(table)
    if options.out:
        atomic_write_text(options.out, table + '\n')
    return table


if __name__ == '__main__':
    main()
