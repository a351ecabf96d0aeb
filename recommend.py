"""Top-k recommendations for one or many users, from an exported model or from a run folder.

    python recommend.py --model model_64.pt --history B004756YJA,B004ZT0SSG --k 10
    python recommend.py --model model_64.pt --history_file users.txt --json
    python recommend.py --export_root RUN --size 64 --history 12,85,3

History items are ASINs or item ids; a token that is an ASIN of the catalogue is read as the ASIN,
otherwise as an id. A history file holds one user per line, oldest item first, items separated by
commas or spaces, optionally after a label and a tab (`alice<TAB>B004756YJA,B004ZT0SSG`); `-` reads
standard input. Every user needs at least one item, so a blank line is refused (blank lines at the
end are ignored). The user's own history is excluded from the ranking unless --include_history.
With --json each user gets one output line, in input order: {"user": label, "items": [{"item",
"asin", "score", "title"}, ...]}, best first; an unlabelled line's label is "line N".
What the model cannot do is said on standard error: a history longer than the model's input (its
last items are used), fewer than --k items left to recommend, users left without a known item by
--skip_unknown (they get an empty list).
"""
import argparse
import json
import math
import sys

from utils.omp_policy import set_wait_policy  # before anything imports torch (utils/omp_policy.py)

set_wait_policy()

import torch

from deploy.export_format import ExportError, load_export
from deploy.recommender import HistoryError, Recommender
from deploy.run_export import RUN_ERRORS, load_run_size
from utils.runtime import DeviceError, resolve_device

INTERRUPTED_STATUS = 130  # the shell's status for a process stopped by SIGINT (as train.py)


def read_history_lines(path):
    """[(label, history text, where)] from a history file ('-' = standard input). A blank line
    between users is refused: --json writes one line per user, and the lines would stop matching."""
    handle = sys.stdin if str(path) == '-' else open(path, encoding='utf-8')
    try:
        users, first_blank = [], None
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                first_blank = first_blank or number
                continue
            if first_blank is not None:
                raise HistoryError(f'{path}, line {first_blank}: blank line. Each line is one user (and --json writes '
                                   f'one line per user, in order); remove it, or put that user\'s items there.')
            label, tab, items = line.rstrip('\n').partition('\t')
            users.append((label, items, f'{path}, line {number}') if tab
                         else (f'line {number}', line, f'{path}, line {number}'))
        return users
    finally:
        if handle is not sys.stdin:
            handle.close()


def parse_histories(recommender, users, skip_unknown):
    """Item ids per user; HistoryError naming the line of an unknown item or an empty history."""
    histories = []
    for label, text, where in users:
        try:
            history = recommender.parse_history(text, skip_unknown)
        except HistoryError as error:
            raise HistoryError(f'{where} ({label}): {error} (use --skip_unknown to drop such items)') from None
        if not text.strip(' ,\t\n'):
            raise HistoryError(f'{where} ({label}): no history items; give at least one ASIN or item id per user '
                               f'(the model has nothing else to go on)')
        histories.append(history)
    return histories


def limits_notes(recommender, labels, histories, all_records, k, exclude_history):
    """One line per thing the model could not do as asked (said on standard error, never silently)."""
    notes = []
    emptied = [label for label, history in zip(labels, histories) if not history]
    if emptied:
        notes.append(f'note: {len(emptied)} user(s) have no item this model knows ({", ".join(emptied[:3])}'
                     f'{", ..." if len(emptied) > 3 else ""}); --skip_unknown dropped them all, so they get an empty list')
    longer = sum(len(history) > recommender.max_len for history in histories)
    if longer:
        notes.append(f'note: {longer} user(s) have more history items than the model reads ({recommender.max_len}, '
                     f'its --lru_max_len): their last {recommender.max_len} are used'
                     + (', and all of them are excluded from the ranking' if exclude_history else ''))
    short = sum(len(records) < k for records, history in zip(all_records, histories) if history)
    if short:
        less = ', less the history items excluded from the ranking' if exclude_history else ''
        notes.append(f'note: {short} user(s) get fewer than --k {k} items: the catalogue has '
                     f'{recommender.num_items} items{less}')
    return notes


def format_text(label, records, history_length):
    lines = [f'{label} ({history_length} history items)']
    for rank, record in enumerate(records, start=1):
        name = record['asin'] or str(record['item'])
        title = f'  {record["title"]}' if record['title'] else ''
        lines.append(f'  {rank:>3}. {name:<12} {record["score"]:>9.4f}{title}')
    return '\n'.join(lines)


def parse_recommend_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_argument_group('model (one of)')
    source.add_argument('--model', help='a file written by export.py')
    source.add_argument('--export_root', help='a run folder made by train.py (with --size)')
    source.add_argument('--size', type=int, help='with --export_root: which nested size to use')
    source.add_argument('--data_root', help="with --export_root: override the run's --data_root")
    source.add_argument('--accept_changed_inputs', action='store_true',
                        help='with --export_root: serve although the dataset or a feature table differs from what '
                             'the run was trained on (RUN/inputs.json); said on standard error')
    users = p.add_argument_group('users (one of)')
    users.add_argument('--history', help='one user: items (ASINs or ids) separated by commas, oldest first')
    users.add_argument('--history_file', help="one user per line ('-' = standard input)")
    p.add_argument('--k', type=int, default=10, help='how many items per user')
    p.add_argument('--include_history', action='store_true', help="allow items of the user's own history")
    p.add_argument('--skip_unknown', action='store_true', help='drop unknown history items instead of stopping')
    p.add_argument('--json', action='store_true', help='one JSON list per user and line')
    p.add_argument('--batch_size', type=int, default=256, help='users scored at once (256 is the fastest on the 2-core CPU we measured)')
    p.add_argument('--new_item_boost', type=float, default=0.0,
                   help='added to the scores of the items add_items.py added to the export (a hybrid buries items '
                        'without a trained ID row; eval.py --new_item_boost auto on a --cold_start run chooses one '
                        'on validation: docs/content_features.md, New-item boost)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1: on the shared '
                   '2-core machine we measured, 2 threads were several times slower; scale with processes)')
    options = p.parse_args(argv)
    if (options.model is None) == (options.export_root is None):
        p.error('give either --model FILE or --export_root RUN --size S')
    if options.export_root is not None and options.size is None:
        p.error('--export_root needs --size (one of the run\'s nested sizes)')
    if options.accept_changed_inputs and options.export_root is None:
        p.error('--accept_changed_inputs goes with --export_root (an export file holds its own item table)')
    if (options.history is None) == (options.history_file is None):
        p.error('give either --history ITEMS or --history_file FILE')
    if options.k < 1 or options.batch_size < 1 or options.threads < 1:
        p.error('--k, --batch_size and --threads must be at least 1')
    if not math.isfinite(options.new_item_boost):
        p.error(f'--new_item_boost must be a finite number, got {options.new_item_boost}')
    return options


def main(argv=None):
    options = parse_recommend_args(sys.argv[1:] if argv is None else argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        return recommend(options)
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's status, as train.py
        print('interrupted (Ctrl-C); recommend.py writes nothing but its output, and the recommendations not '
              'printed yet are lost. Run the same command again.', file=sys.stderr)
        raise SystemExit(INTERRUPTED_STATUS) from None
    finally:  # main() may be called in-process (tests, notebooks): leave torch as it was
        torch.set_num_threads(previous_threads)


def recommend(options):
    try:
        device = resolve_device(options.device)
        exported = (load_export(options.model) if options.model is not None
                    else load_run_size(options.export_root, options.size, options.data_root,
                                       accept_changed_inputs=options.accept_changed_inputs))
        recommender = Recommender(exported, device, options.new_item_boost)
        if options.new_item_boost and not len(recommender.added_items):
            print('warning: --new_item_boost changes nothing: this model holds no item added by add_items.py',
                  file=sys.stderr)
        users = ([('history', options.history, '--history')] if options.history is not None
                 else read_history_lines(options.history_file))
        histories = parse_histories(recommender, users, options.skip_unknown)
    except (ExportError, HistoryError, DeviceError, OSError) + RUN_ERRORS as error:
        raise SystemExit(f'error: {error}') from None
    items, values = recommender.top_k(histories, options.k, not options.include_history, options.batch_size)
    all_records = [records if history else []  # no known item: nothing to go on, not a generic list
                   for records, history in zip(recommender.records(items, values), histories)]
    labels = [label for label, _, _ in users]
    for note in limits_notes(recommender, labels, histories, all_records, options.k, not options.include_history):
        print(note, file=sys.stderr)
    out = []
    for label, history, records in zip(labels, histories, all_records):
        out.append(json.dumps({'user': label, 'items': records}) if options.json
                   else format_text(label, records, len(history)))
    print(('\n' if options.json else '\n\n').join(out))
    return all_records


if __name__ == '__main__':
    main()
