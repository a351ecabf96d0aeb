"""Property-based tests: the parsers and the configuration either accept an input and return
something valid, or refuse it with their own error, never anything else; a loss spike is found."""
import contextlib
import gzip
import io
import json
import math
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config import ConfigError, parse_args, parse_sizes
from datasets.features import FeatureTableError, load_feature_table
from datasets.p5 import MIN_SEQUENCE_LENGTH, DataError, DataWarning, read_meta, read_sequences
from trainer.trainer import NonFiniteLossError, Trainer

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextlib.contextmanager
def scratch_file(name):
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder) / name


# ---- size lists ------------------------------------------------------------------------------
@FAST
@given(st.text(alphabet=st.sampled_from('0123456789,-+. x_\u0663'), max_size=20))
def test_parse_sizes_accepts_only_increasing_positive_integers(text):
    try:
        sizes = parse_sizes(text)
    except ConfigError:
        return
    assert sizes and all(isinstance(s, int) and s > 0 for s in sizes)
    assert all(a < b for a, b in zip(sizes, sizes[1:]))


@FAST
@given(st.lists(st.integers(1, 4096), min_size=1, max_size=8, unique=True), st.sampled_from([',', ', ', ' ,']))
def test_parse_sizes_round_trips_sorted_lists(values, separator):
    values = sorted(values)
    assert parse_sizes(separator.join(map(str, values))) == values


# ---- the whole command line ------------------------------------------------------------------
NUMBERS = st.one_of(st.integers(-3, 600).map(str), st.sampled_from(['0', '1e-3', '-0.5', 'nan', 'inf', '1.0', 'x']))
OPTIONS = ['--lr', '--weight_decay', '--adam_epsilon', '--max_grad_norm', '--warmup_steps', '--lru_dropout',
           '--lru_attn_dropout', '--lru_r_min', '--lru_r_max', '--train_batch_size', '--num_epochs',
           '--early_stopping_patience', '--lru_num_blocks', '--lru_max_len']


@FAST
@given(st.lists(st.tuples(st.sampled_from(OPTIONS), NUMBERS), max_size=5),
       st.sampled_from(['8,16', '16,8', '8,8', '0,4', '4', '4,x']), st.sampled_from(['NDCG@10', 'MRR@7', 'Recall@5']))
def test_configurations_are_valid_or_refused_with_a_message(pairs, sizes, best_metric):
    argv = [item for pair in pairs for item in pair] + ['--mrl_hidden_sizes', sizes, '--best_metric', best_metric,
                                                       '--export_root', 'unused']
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = parse_args(argv)
    except SystemExit as stop:
        assert stop.code == 2 and 'error:' in errors.getvalue()
        return
    assert all(a < b for a, b in zip(args.mrl_hidden_sizes, args.mrl_hidden_sizes[1:])) and args.mrl_hidden_sizes[0] > 0
    assert 0 <= args.lru_r_min < args.lru_r_max <= 1 and 0 <= args.lru_dropout < 1 and 0 <= args.lru_attn_dropout < 1
    assert math.isfinite(args.lr) and args.lr > 0 and args.adam_epsilon > 0 and args.weight_decay >= 0
    assert min(args.train_batch_size, args.num_epochs, args.early_stopping_patience, args.lru_num_blocks) >= 1
    assert int(args.best_metric.split('@')[1]) in args.metric_ks


# ---- sequential_data.txt ---------------------------------------------------------------------
TOKENS = st.one_of(st.integers(-2, 12).map(str), st.sampled_from(['x', '1.5', '', '7_0', '\u0663', '\t']))


@FAST
@given(st.lists(st.lists(TOKENS, max_size=7), max_size=6))
def test_read_sequences_returns_valid_users_or_names_a_line(rows):
    text = '\n'.join(' '.join(row) for row in rows)
    with scratch_file('sequential_data.txt') as path:
        path.write_text(text)
        try:
            sequences = read_sequences(path, num_items=10)
        except DataError as error:
            assert str(path) in str(error)
            return
    assert sequences
    for user, items in sequences.items():
        assert user >= 1 and len(items) >= MIN_SEQUENCE_LENGTH and all(1 <= i <= 10 for i in items)


@FAST
@given(st.dictionaries(st.integers(1, 10_000), st.lists(st.integers(1, 50), min_size=3, max_size=9), min_size=1))
def test_read_sequences_round_trips_valid_files(sequences):
    with scratch_file('sequential_data.txt') as path:
        path.write_text(''.join(f'{u} {" ".join(map(str, s))}\n' for u, s in sequences.items()))
        assert read_sequences(path, num_items=50) == sequences


# ---- meta.json.gz ----------------------------------------------------------------------------
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                   st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                      max_leaves=6)
RECORDS = st.dictionaries(st.sampled_from(['title', 'price', 'brand', 'categories', 'imUrl']), VALUES)


@FAST
@given(st.lists(st.tuples(RECORDS, st.booleans()), min_size=1, max_size=5))
def test_read_meta_reads_python_literals_and_json_exactly(records):
    expected, lines = {}, []
    for index, (record, as_json) in enumerate(records):
        record = {'asin': f'A{index}', **record}
        lines.append(json.dumps(record) if as_json else repr(record))
        expected[record['asin']] = record
    with scratch_file('meta.json.gz') as path:
        path.write_bytes(gzip.compress(('\n'.join(lines) + '\n').encode('utf-8')))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            assert read_meta(path) == expected
    assert bool(caught) == any(as_json for _, as_json in records)
    assert all(issubclass(w.category, DataWarning) for w in caught)


@FAST
@given(st.lists(st.text(max_size=30), min_size=1, max_size=4))
def test_read_meta_refuses_junk_naming_the_line(lines):
    with scratch_file('meta.json') as path:
        path.write_text('\n'.join(lines) + '\n')
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', DataWarning)
                meta = read_meta(path)
        except DataError as error:
            assert str(path) in str(error)
            return
    assert all(isinstance(k, str) and v['asin'] == k for k, v in meta.items())


# ---- feature tables --------------------------------------------------------------------------
@FAST
@given(st.integers(1, 6), st.integers(0, 4), st.integers(1, 6), st.sampled_from([0.0, np.nan, np.inf]))
def test_feature_tables_load_only_when_they_fit(rows, cols, num_items, poison):
    table = np.ones((rows, cols), dtype=np.float32)
    if table.size and poison != 0.0:
        table.flat[0] = poison
    with scratch_file('text_enc.npy') as path:
        np.save(path, table)
        try:
            loaded = load_feature_table(path, num_items, 'enc')
        except FeatureTableError as error:
            assert str(path) in str(error)
            return
    assert loaded.shape == (num_items + 1, cols) and torch.isfinite(loaded).all() and not loaded[0].any()


# ---- a loss spike ----------------------------------------------------------------------------
@FAST
@given(st.lists(st.floats(0.0, 50.0), min_size=1, max_size=30), st.data())
def test_the_first_non_finite_loss_is_the_one_reported(losses, data):
    spikes = data.draw(st.dictionaries(st.integers(0, len(losses) - 1), st.sampled_from([math.inf, -math.inf, math.nan])))
    values = torch.tensor([spikes.get(i, v) for i, v in enumerate(losses)])
    first_batch, epoch = data.draw(st.integers(0, 100)), data.draw(st.integers(0, 9))
    trainer = SimpleNamespace(steps_per_epoch=200)
    if not spikes:
        Trainer.check_finite(trainer, values, epoch, first_batch)
        return
    with pytest.raises(NonFiniteLossError) as caught:
        Trainer.check_finite(trainer, values, epoch, first_batch)
    first = min(spikes)
    assert caught.value.batch == first_batch + first + 1 and caught.value.epoch == epoch + 1
    assert caught.value.global_step == epoch * 200 + first_batch + first + 1
    assert str(caught.value.value) == str(float(spikes[first]))
