"""The leave-one-out wiring through the real code path (datasets.p5.split_examples and
runs.run_inputs.load_data) against a derivation from each raw sequence, written out here by hand:

    train labels  = s[:-2], last L, left-padded      train tokens = s[:-3], last L, left-padded
    val input     = s[:-2], last L, left-padded      val target   = s[-2]   val history  = s[:-2]
    test input    = s[:-1], last L, left-padded      test target  = s[-1]   test history = s[:-1]

so a validation input that sees its own target (a leak) or a test input that misses the
validation item fails here, whatever the model does with them."""
import pytest

from config import parse_args
from datasets.p5 import SequenceData, load_p5, split_examples
from runs.run_inputs import load_data

MAX_LEN = 4
# Lengths 3 (the shortest leave-one-out allows), 4, 6, and 9 (longer than MAX_LEN + 2, so that
# truncation to the last L items shows); user ids out of order, items repeating within a user.
SEQUENCES = {7: [11, 12, 13], 2: [5, 6, 7, 8], 30: [1, 2, 3, 4, 5, 6], 4: [9, 3, 9, 3, 8, 1, 2, 7, 6]}


def padded(items, length):
    """The last `length` items, zeros in front: written independently of datasets.p5.left_pad."""
    items = items[len(items) - length:] if len(items) > length else items
    return [0] * (length - len(items)) + items


def expected_rows(sequence, length):
    return {
        'train_tokens': padded(sequence[:-3], length), 'train_labels': padded(sequence[:-2], length),
        'val_input': padded(sequence[:-2], length), 'val_target': sequence[-2], 'val_history': sequence[:-2],
        'test_input': padded(sequence[:-1], length), 'test_target': sequence[-1], 'test_history': sequence[:-1],
    }


def assert_split_follows_the_raw_sequences(splits, sequences, length, users=None):
    """Every user in `users` (default all) against expected_rows; rows in ascending user order."""
    order = sorted(sequences)
    tokens, labels = splits['train']
    for user in users or order:
        row = order.index(user)
        want = expected_rows(sequences[user], length)
        assert tokens[row].tolist() == want['train_tokens'], (user, 'train tokens')
        assert labels[row].tolist() == want['train_labels'], (user, 'train labels')
        for part in ('val', 'test'):
            ids, inputs, targets, histories = splits[part]
            assert ids[row].item() == user
            assert inputs[row].tolist() == want[f'{part}_input'], (user, f'{part} input')
            assert targets[row].item() == want[f'{part}_target'], (user, f'{part} target')
            history = [item for item in histories[row].tolist() if item]  # zero-padded to the longest
            assert history == want[f'{part}_history'], (user, f'{part} history')
    assert splits['train_sequences'] == {u: s[:-2] for u, s in sequences.items()}


def test_split_examples_build_every_input_and_target_from_the_raw_sequence():
    data = SequenceData(None, SEQUENCES, num_items=13)
    assert_split_follows_the_raw_sequences(split_examples(data, MAX_LEN), SEQUENCES, MAX_LEN)


def test_no_input_holds_its_own_target_and_the_test_input_ends_with_the_validation_item():
    """The two ways the wiring can go wrong, said directly (with a window long enough to hold
    every history whole): validation never sees s[-2], test always sees it last."""
    splits = split_examples(SequenceData(None, SEQUENCES, num_items=13), 16)
    for row, user in enumerate(sorted(SEQUENCES)):
        sequence = SEQUENCES[user]
        val_input = [item for item in splits['val'][1][row].tolist() if item]
        test_input = [item for item in splits['test'][1][row].tolist() if item]
        assert val_input == sequence[:-2] and len(val_input) == len(sequence) - 2
        assert test_input[-1] == sequence[-2] == splits['val'][2][row].item()
        assert len(test_input) == len(sequence) - 1


@pytest.mark.parametrize('max_len', [3, 50])
def test_load_data_on_the_demo_splits_each_user_as_the_file_says(demo_root, tmp_path, max_len):
    """train.py's path (load_data) on the demo: the file's raw lines, parsed here by hand, decide
    every tensor (one window shorter than most demo histories, and the default one)."""
    args = parse_args(['--dataset_code', 'demo', '--data_root', str(demo_root), '--export_root', str(tmp_path),
                       '--lru_max_len', str(max_len)])
    _, splits, _ = load_data(args, say=lambda *_: None)
    raw = {}
    for line in (demo_root / 'demo' / 'sequential_data.txt').read_text().split('\n'):
        if line.strip():
            user, *items = (int(part) for part in line.split())
            raw[user] = items
    assert len(splits['train'][0]) == len(raw) == len(load_p5(demo_root / 'demo').sequences)
    longest = max(raw, key=lambda u: len(raw[u]))
    shortest = min(raw, key=lambda u: len(raw[u]))
    assert_split_follows_the_raw_sequences(splits, raw, max_len, users=sorted({longest, shortest, *list(raw)[:25]}))
