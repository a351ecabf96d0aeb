"""Cut one size out of a trained run and save it as a standalone, deployable model file.

    python export.py --export_root RUN --size 64 --out model_64.pt
    python export.py --export_root RUN --size 64 --out model_64.pt --keep_features
    python export.py --export_root RUN --size all          # every size, into RUN/exports/

The file holds only what the size-s model uses (model/slicing.py): the leading blocks of every
nested layer, the item table precomputed at size s (or, with --keep_features, the first s rows of
the projection plus the frozen feature table), the item id -> ASIN map and titles, and the
configuration that rebuilds it (deploy/export_format.py, whose `load_export(path)` needs neither the run's checkpoint nor the data).
"""
import argparse
import sys
from pathlib import Path

from utils.omp_policy import set_wait_policy  # before anything imports torch (utils/omp_policy.py)

set_wait_policy()

from deploy.export_format import ExportError, check_finite, parameter_total, write_export
from deploy.run_export import RUN_ERRORS, export_run
from model.slicing import SizeError, size_position
from runs.run_folder import best_checkpoint_path, read_run_config
from runs.trained_run import load_trained_run

INTERRUPTED_STATUS = 130  # the shell's status for a process stopped by SIGINT (as train.py)


def parse_export_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--export_root', required=True, help='a run folder made by train.py')
    p.add_argument('--size', required=True, help="one of the run's nested sizes, or 'all'")
    p.add_argument('--out', default=None, help='output file (default RUN/exports/model_<size>.pt); '
                   "with --size all, a folder (default RUN/exports)")
    p.add_argument('--keep_features', action='store_true', help='store the projection and the frozen '
                   'features instead of the precomputed item table (larger unless s > feature width)')
    p.add_argument('--data_root', default=None, help="override the run's --data_root")
    p.add_argument('--accept_changed_inputs', action='store_true',
                   help='export although the dataset or a feature table differs from what the run was trained on '
                        '(RUN/inputs.json); said on standard error')
    return p.parse_args(argv)


def main(argv=None):
    options = parse_export_args(sys.argv[1:] if argv is None else argv)
    root = Path(options.export_root)
    written = []
    try:
        run_sizes = read_run_config(root)['mrl_hidden_sizes']  # check --size before the slow loading
        sizes = run_sizes if options.size == 'all' else [_size_argument(options.size, run_sizes)]
        if options.size != 'all' and options.out and Path(options.out).is_dir():
            raise ExportError(f'--out {options.out} is a folder; give a file name such as '
                              f'{Path(options.out) / f"model_{sizes[0]}.pt"} (--size all writes into a folder)')
        loaded = load_trained_run(root, options.data_root, options.accept_changed_inputs)
        for size in sizes:
            if options.size == 'all':
                out = Path(options.out or root / 'exports') / f'model_{size}.pt'
            else:
                out = Path(options.out or root / 'exports' / f'model_{size}.pt')
            bundle = export_run(root, size, keep_features=options.keep_features, loaded=loaded)
            check_finite(bundle, best_checkpoint_path(root))
            write_export(out, bundle)
            print(f'wrote {out}: size {size}, {parameter_total(bundle):,} numbers of model state '
                  f'({bundle["item_input"]}), {out.stat().st_size / 1e6:.3f} MB')
            written.append(out)
        return written
    except RUN_ERRORS + (ExportError,) as error:
        raise SystemExit(f'error: {error}') from None
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's status, as train.py
        done = (f'{", ".join(str(path) for path in written)} {"is" if len(written) == 1 else "are"} complete'
                if written else 'no export file was written')
        print(f'interrupted (Ctrl-C); {done}, and no file is left in part (each is written whole, then renamed '
              f'into place). Run the same command again.', file=sys.stderr)
        raise SystemExit(INTERRUPTED_STATUS) from None



def _size_argument(text, sizes):
    try:
        size = int(text)
    except ValueError:
        raise SizeError(f"--size must be an integer or 'all', got {text!r}") from None
    size_position(sizes, size)  # raises with the list of valid sizes
    return size


if __name__ == '__main__':
    main()
