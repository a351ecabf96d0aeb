"""Add new items to an export file without retraining (docs/deploy.md, "Adding items to an export").

    python add_items.py --export_root RUN --export model_64.pt --items new_items.json.gz
    python add_items.py --export_root RUN --export model_64.pt --items new.json --out model_64_new.pt

The items file holds one metadata dict per line, as the dataset's meta.json.gz ({'asin': ..., 'title':
..., 'price': ..., 'brand': ..., 'categories': ...}; plain or .gz, JSON lines too). Each new item gets
the row the run's model gives its text: encoded by the run's text encoder, transformed with the run's
--feature_preprocessing statistics, projected at the export's size; a hybrid's ID part is zero (only
training learns one). New items get ids N+1, N+2, ... in file order. Runs with image features and
ID-only runs are refused. The export is replaced whole (or --out is written); deploy/add_items.py.
"""
import argparse
import sys
from pathlib import Path

from utils.omp_policy import set_wait_policy  # before anything imports torch (utils/omp_policy.py)

set_wait_policy()

from datasets.encoders import EncoderError
from deploy.add_items import AddItemsError, add_items_to_export
from deploy.export_format import ExportError, read_export, write_export
from deploy.run_export import RUN_ERRORS

INTERRUPTED_STATUS = 130  # the shell's status for a process stopped by SIGINT (as train.py)


def parse_add_items_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--export_root', required=True, help='the run folder the export was cut from')
    p.add_argument('--export', required=True, help='an export file of that run (export.py)')
    p.add_argument('--items', required=True, help='the new items: one metadata dict per line (plain or .gz)')
    p.add_argument('--out', default=None, help='write the extended export here (default: replace --export)')
    p.add_argument('--data_root', default=None, help="override the run's --data_root")
    p.add_argument('--accept_changed_inputs', action='store_true',
                   help='add although the dataset or the text table differs from what the run was trained on; '
                        'said on standard error')
    return p.parse_args(argv)


def main(argv=None):
    options = parse_add_items_args(sys.argv[1:] if argv is None else argv)
    out = Path(options.out or options.export)
    try:
        if out.is_dir():
            raise AddItemsError(f'--out {out} is a folder; give a file name such as {out / Path(options.export).name}')
        bundle = read_export(options.export)
        extended = add_items_to_export(bundle, options.export, options.export_root, options.items,
                                       options.data_root, options.accept_changed_inputs)
        write_export(out, extended)
    except RUN_ERRORS + (ExportError, AddItemsError, EncoderError) as error:
        raise SystemExit(f'error: {error}') from None
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's status, as export.py
        print(f'interrupted (Ctrl-C); {out} is as it was (it is written whole, then renamed into place). Run the '
              f'same command again.', file=sys.stderr)
        raise SystemExit(INTERRUPTED_STATUS) from None
    added = extended['num_items'] - bundle['num_items']
    print(f'added {added} item(s) to {out}: {extended["num_items"]:,} items now (size {extended["size"]}, '
          f'{extended["item_input"]})')
    return extended


if __name__ == '__main__':
    main()
