"""The P5/VIP5 dataset folder (docs/method.md, Data): sequences, id maps, metadata, and the leave-one-out split.

Every problem with a file raises `DataError` naming the file, the line and what to do.
"""
import ast
import difflib
import gzip
import json
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from datasets.cold_start import without_items

KNOWN_CODES = ('beauty', 'clothing', 'sports', 'toys', 'demo')  # the paper's four, and the synthetic demo
MIN_SEQUENCE_LENGTH = 3  # leave-one-out needs a training item, a validation item and a test item
INTEGER = re.compile(r'-?[0-9]+')  # plain ASCII integers only (int() would also take '1_0' or '٣')


class DataError(ValueError):
    """A dataset file is missing or malformed; the message says which file, where, and the fix."""


class DataWarning(UserWarning):
    """A dataset file is usable but not in the expected form (e.g. JSON metadata)."""


@dataclass
class SequenceData:
    data_dir: Path
    sequences: dict            # user id -> chronological list of item ids (1-based)
    num_items: int
    id2item: dict = field(default_factory=dict)  # item id -> ASIN (empty when there are no datamaps)

    @property
    def num_users(self):
        return len(self.sequences)

    @property
    def num_interactions(self):
        return sum(len(s) for s in self.sequences.values())


def _require(path, what):
    if not path.exists():
        raise DataError(f'{path} is missing ({what}). Put the P5 files in {path.parent}/ '
                        f'(see docs/data.md) or use --dataset_code demo.')


def read_datamaps(path):
    _require(path, 'the id maps of the dataset')
    try:
        maps = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f'{path} is not valid JSON ({error}); restore it from the P5 release '
                        f'or rebuild it with `python -m datasets.prepare`.') from None
    if not isinstance(maps, dict) or not isinstance(maps.get('item2id'), dict):
        raise DataError(f'{path} has no "item2id" map; rebuild it with `python -m datasets.prepare`.')
    id2item = {}
    for asin, item_id in maps['item2id'].items():
        try:
            id2item[int(item_id)] = asin
        except (TypeError, ValueError):
            raise DataError(f'{path}: item2id[{asin!r}] = {item_id!r} is not an integer id; rebuild the '
                            f'file with `python -m datasets.prepare`.') from None
    return id2item


def check_item_ids(path, id2item):
    """The item count N, or DataError unless the ids of `id2item` are exactly 1..N."""
    num_items = max(id2item) if id2item else 0
    missing = sorted(set(range(1, num_items + 1)) - set(id2item))
    if missing or any(item_id < 1 for item_id in id2item):
        gaps = (f'{", ".join(str(i) for i in missing[:5])}{", ..." if len(missing) > 5 else ""} missing' if missing
                else f'{min(id2item)} is not positive')
        raise DataError(f'{path}: item ids are not 1..{num_items} without gaps ({gaps}); the sequences and '
                        f'feature tables index items by those ids. Rebuild the file with `python -m datasets.prepare` '
                        f'(which numbers the items 1..N), or restore it from the P5 release.')
    return num_items


def read_sequences(path, num_items=None):
    """user id -> item ids from lines `user item item ...`, checked line by line."""
    _require(path, 'one line per user: user_id item_id item_id ...')
    sequences = {}
    first_blank = None  # blank lines at the end are harmless; one followed by users may be a lost user
    with open(path, 'rb') as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode('utf-8')
            except UnicodeDecodeError:
                raise DataError(f'{path}, line {line_number}: not text (undecodable bytes). The file must be '
                                f'plain text lines `user_id item_id item_id ...`; restore it from the P5 '
                                f'release.') from None
            if not line.strip():
                first_blank = first_blank or line_number
                continue
            if first_blank is not None:
                raise DataError(f'{path}, line {first_blank}: empty line between users, where a user\'s line may '
                                f'have been lost. Each line must be `user_id item_id item_id ...`; delete the empty '
                                f'line if no user is missing, or restore the file from the P5 release.')
            _check_sequence_line(path, line_number, line, sequences, num_items)
    if not sequences:
        raise DataError(f'{path} holds no sequences. Each line must be `user_id item_id item_id ...`.')
    return sequences


def _check_sequence_line(path, line_number, line, sequences, num_items):
    """Parse one `user item item ...` line into `sequences`, or raise DataError naming the line."""
    parts = line.split()
    if not all(INTEGER.fullmatch(p) for p in parts):
        raise DataError(f'{path}, line {line_number}: not a list of integer ids: '
                        f'{line.strip()[:80]!r}. Each line must be `user_id item_id item_id ...`.')
    user, *items = (int(p) for p in parts)
    if user < 1:
        raise DataError(f'{path}, line {line_number}: user id {user} is not positive; ids are 1-based. '
                        f'Each line must be `user_id item_id item_id ...`.')
    if user in sequences:
        raise DataError(f'{path}, line {line_number}: user {user} appears twice; '
                        f'each user has exactly one line.')
    if len(items) < MIN_SEQUENCE_LENGTH:
        raise DataError(f'{path}, line {line_number}: user {user} has {len(items)} items; '
                        f'leave-one-out needs at least {MIN_SEQUENCE_LENGTH}. Filter such users out '
                        f'(python -m datasets.prepare applies 5-core filtering).')
    bad = [i for i in items if i < 1 or (num_items is not None and i > num_items)]
    if bad:
        raise DataError(f'{path}, line {line_number}: item id {bad[0]} is outside 1..{num_items} '
                        f'(the ids of datamaps.json). The sequences and datamaps do not belong together.')
    sequences[user] = items


def load_p5(data_dir):
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(missing_dataset_message(data_dir))
    id2item = read_datamaps(data_dir / 'datamaps.json')
    num_items = check_item_ids(data_dir / 'datamaps.json', id2item)
    sequences = read_sequences(data_dir / 'sequential_data.txt', num_items)
    return SequenceData(data_dir, sequences, num_items, id2item)


def missing_dataset_message(data_dir):
    """Why <data_root>/<code> is not there: the known codes, the folders that are, the closest name."""
    code, root = data_dir.name, data_dir.parent
    present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    close = difflib.get_close_matches(code, sorted(set(KNOWN_CODES) | set(present)), n=1)
    guess = f' Did you mean --dataset_code {close[0]}?' if close else ''
    where = (f'{root} holds {", ".join(present)}' if present else f'{root} holds no dataset folder'
             if root.is_dir() else f'--data_root {root} does not exist')
    return (f'dataset folder {data_dir} does not exist.{guess} --dataset_code is one of {", ".join(KNOWN_CODES)}, '
            f'or the name of a folder under --data_root ({where}); docs/data.md says how to get the data.')


def metadata_warning(data_dir):
    """None when <data_dir>/meta.json.gz reads whole; a warning sentence when it is missing (it is
    optional: ID-only runs and feature tables already built do not need it); DataError when broken."""
    path = Path(data_dir) / 'meta.json.gz'
    if not path.exists():
        return (f'warning: {path} is missing: training does not need it, but exports and recommend.py will show '
                f'no titles, and text features cannot be built from it. python -m datasets.prepare writes it.')
    read_meta(path)
    return None


def read_meta(path):
    """ASIN -> metadata dict, from Python-literal lines (never `eval`).

    Lines in JSON are accepted, with one DataWarning per file: JSON is unambiguous, and converted
    copies of the McAuley files exist. Anything else stops, naming the line."""
    path = Path(path)
    _require(path, 'item metadata, one Python dict literal per line')
    meta, json_lines = {}, []
    opener = gzip.open if path.suffix == '.gz' else open
    line_number = 0
    try:
        with opener(path, 'rb') as handle:
            for line_number, raw in enumerate(handle, start=1):
                line = raw.decode('utf-8')
                if line.strip():
                    record = _parse_meta_line(path, line_number, line, json_lines)
                    meta[record['asin']] = record
    except UnicodeDecodeError:
        raise DataError(f'{path}, line {line_number + 1}: not UTF-8 text. Restore the file (python -m '
                        f'datasets.prepare writes it from the McAuley release).') from None
    except (OSError, EOFError, zlib.error) as error:
        compressed = 'a complete gzip file' if opener is gzip.open else 'readable'
        where = f'after line {line_number}' if line_number else 'from its start'
        raise DataError(f'{path}: cannot be read {where} ({type(error).__name__}: {error}); '
                        f'it is not {compressed}. Restore it (python -m datasets.prepare writes it from the '
                        f'McAuley release).') from None
    if json_lines:
        warnings.warn(f'{path}: {len(json_lines)} line(s) in JSON, not Python literals (first: line '
                      f'{json_lines[0]}); read as JSON. The McAuley files are Python literals; a converted '
                      f'copy is fine.', DataWarning, stacklevel=2)
    return meta


def _parse_meta_line(path, line_number, line, json_lines):
    # JSON first: a McAuley line (single-quoted keys) is never valid JSON, and a JSON line must
    # be read as JSON (literal_eval would read its surrogate-pair escapes differently).
    try:
        record = json.loads(line)
        json_lines.append(line_number)
    except (json.JSONDecodeError, RecursionError):
        try:
            record = ast.literal_eval(line.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise DataError(f'{path}, line {line_number}: neither a Python dict literal nor JSON: '
                            f'{line.strip()[:80]!r}. Each line must be one dict such as '
                            f"{{'asin': 'B000...', 'title': ...}}; restore the file from the McAuley "
                            f'release.') from None
    if not isinstance(record, dict) or not isinstance(record.get('asin'), str):
        raise DataError(f'{path}, line {line_number}: expected a dict with a string "asin" key, got '
                        f'{line.strip()[:80]!r}. Restore the file from the McAuley release.')
    return record


def leave_one_out(sequences):
    """(train, val, test): train = s[:-2], val target = s[-2], test target = s[-1]."""
    train = {u: s[:-2] for u, s in sequences.items()}
    val = {u: s[-2] for u, s in sequences.items()}
    test = {u: s[-1] for u, s in sequences.items()}
    return train, val, test


def left_pad(items, length):
    items = list(items)[-length:] if length > 0 else []
    return [0] * (length - len(items)) + items


def training_examples(train, max_len):
    """(tokens, labels), each (U, L): labels = s[-L:], tokens = s[:-1][-L:], padded separately."""
    users = sorted(train)
    tokens = torch.tensor([left_pad(train[u][:-1], max_len) for u in users], dtype=torch.long)
    labels = torch.tensor([left_pad(train[u], max_len) for u in users], dtype=torch.long)
    return tokens, labels


def evaluation_examples(histories, targets, max_len):
    """(users, inputs (U, L), targets (U,), full histories (U, H) zero-padded) in user order."""
    users = sorted(targets)
    inputs = torch.tensor([left_pad(histories[u], max_len) for u in users], dtype=torch.long)
    target = torch.tensor([targets[u] for u in users], dtype=torch.long)
    longest = max(len(histories[u]) for u in users)
    history = torch.tensor([left_pad(histories[u], longest) for u in users], dtype=torch.long)
    return torch.tensor(users), inputs, target, history


def split_examples(data, max_len, held_out=None):
    """Everything training and evaluation need, as tensors. `held_out`: (K,) item ids of the
    cold-start protocol (datasets/cold_start.py), removed from the training sequences only."""
    train, val, test = leave_one_out(data.sequences)
    val_history = train
    test_history = {u: train[u] + [val[u]] for u in train}
    trained = train if held_out is None else without_items(train, held_out)
    return {
        'train': training_examples(trained, max_len),
        'val': evaluation_examples(val_history, val, max_len),
        'test': evaluation_examples(test_history, test, max_len),
        'train_sequences': trained,
        'held_out': held_out,
    }
