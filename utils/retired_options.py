"""Options of the released code that change nothing here (docs/architecture.md): accepted with the one
value this code computes with, so that old command lines and args.yaml files (as --config) keep
working; refused with the reason for any other value; never saved."""
import argparse

# name -> the only value accepted (None: no value is, the option is refused whenever given)
RETIRED_OPTIONS = {'min_rating': 0, 'min_uc': 5, 'min_sc': 5, 'split': 'leave_one_out', 'eval_mode': None}
RETIRED_REASONS = {
    'min_rating': 'the P5 files are filtered already; python -m datasets.prepare builds other data',
    'min_uc': 'train.py does not filter; python -m datasets.prepare --min_uc builds a differently filtered dataset',
    'min_sc': 'train.py does not filter; python -m datasets.prepare --min_sc builds a differently filtered dataset',
    'split': 'the split is always leave-one-out (last item: test, second last: validation)',
    'eval_mode': 'train.py always tests every size; plots and summaries: python eval.py --eval_mode',
}


def add_retired_options(parser):
    """The retired options, in a group of their own; absent from the namespace unless given."""
    retired = parser.add_argument_group('retired (options of the released code that change nothing here)')
    for name, only in RETIRED_OPTIONS.items():
        retired.add_argument(f'--{name}', type=type(only) if only is not None else str, default=argparse.SUPPRESS,
                             help=f'retired{"" if only is None else f", accepted only as {only!r}"}: '
                                  f'{RETIRED_REASONS[name]}')


def pop_retired_options(args):
    """Remove the retired options from the namespace `args`; the reason a given value is refused, or None."""
    problem = None
    for name, only in RETIRED_OPTIONS.items():
        value = vars(args).pop(name, only)
        if value != only and problem is None:
            problem = f'--{name} {value}: {RETIRED_REASONS[name]}'
    return problem


def without_retired(options):
    """A saved configuration (args.yaml, a checkpoint's) without the retired options older runs saved."""
    return {k: v for k, v in options.items() if k not in RETIRED_OPTIONS}
