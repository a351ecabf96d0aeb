"""Reproduce the paper's table: its best configuration per dataset, train, test every size, compare.

    python reproduce.py --dataset_code beauty                 # text + image, D = 1024, 2 blocks
    python reproduce.py --dataset_code beauty --ablation text # text only (also: image, id)
    python reproduce.py --all                                 # the four datasets
    python reproduce.py --dataset_code beauty --dry_run       # print the train.py command only

The presets are the files presets/<dataset>.yaml, passed to train.py as --config. Any further option
goes to train.py unchanged and overrides the preset, e.g.
`--mrl_hidden_sizes 8,16,32,64,128,256 --lr 1e-3 --language_encoder /path/to/encoder`.
Writes RUN/comparison.md (every size, and the largest against the paper's row with the difference).
"""
import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from utils.omp_policy import set_wait_policy  # before anything imports torch (utils/omp_policy.py)

set_wait_policy()

import train as train_script
from config import parse_args
from runs.run_results import comparison_markdown, run_summary
from utils.io import atomic_write_text

DATASETS = ('beauty', 'clothing', 'sports', 'toys')
PRESETS = Path(__file__).resolve().parent / 'presets'  # <dataset>.yaml: the paper's best configuration
ABLATION_FLAGS = {
    'full': [],
    'text': ['--use_img_encoder', 'False'],
    'image': ['--use_language_encoder', 'False'],
    'id': ['--use_language_encoder', 'False', '--use_img_encoder', 'False'],
}


def preset_path(dataset):
    """presets/<dataset>.yaml, relative to the working folder when it is below it (shorter commands)."""
    path = PRESETS / f'{dataset}.yaml'
    relative = os.path.relpath(path)
    return relative if not relative.startswith('..') else str(path)


def preset_argv(dataset, ablation, stamp):
    """The paper's best configuration (docs/method.md) for `dataset`, as train.py arguments."""
    return ['--config', preset_path(dataset), '--export_root', f'experiments/reproduce/{dataset}_{ablation}_{stamp}',
            ] + ABLATION_FLAGS[ablation]


def merge(preset, extra):
    """Later options win: train.py's argparse keeps the last value of a repeated option."""
    return preset + list(extra)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset_code', choices=DATASETS)
    p.add_argument('--all', action='store_true', help='run the four datasets one after another')
    p.add_argument('--ablation', choices=sorted(ABLATION_FLAGS), default='full',
                   help='full (text + image), text, image or id (no frozen features)')
    p.add_argument('--dry_run', action='store_true', help='print the train.py commands and stop')
    options, extra = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not options.all and not options.dataset_code:
        p.error('give --dataset_code or --all')
    datasets = DATASETS if options.all else (options.dataset_code,)
    reports = []
    for dataset in datasets:
        argv_train = merge(preset_argv(dataset, options.ablation, time.strftime('%Y-%m-%d_%H-%M-%S')), extra)
        print('python train.py ' + ' '.join(shlex.quote(a) for a in argv_train))
        if options.dry_run:
            print(f'  ({argv_train[1]}: ' + ', '.join(line for line in Path(argv_train[1]).read_text().splitlines()
                                                     if line and not line.startswith('#')) + ')')
            continue
        run = Path(parse_args(argv_train).export_root)  # the effective folder, overrides included
        train_script.main(argv_train)
        report = comparison_markdown(run_summary(run))
        atomic_write_text(run / 'comparison.md', report + '\n')
        print('\n' + report)
        reports.append(report)
    return reports


if __name__ == '__main__':
    main()
