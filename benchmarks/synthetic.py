"""Synthetic data of Beauty's shape (datasets/published_stats.py): the benchmark's workload, built in memory.

Speed and memory depend only on the shapes (users, items, sequence lengths, feature widths), not on
what the items are, so random sequences with Beauty's length distribution and random L2-normalised
features stand in for the real files.
"""
from types import SimpleNamespace

import numpy as np
import torch

from datasets.p5 import split_examples
from datasets.published_stats import PUBLISHED_STATS
from model.fmrlrec import FMRLRec
from utils.paper import PAPER_SIZES as PAPER_SIZE_LIST

BEAUTY_USERS = PUBLISHED_STATS['beauty']['users']
BEAUTY_ITEMS = PUBLISHED_STATS['beauty']['items']
BEAUTY_MEAN_LENGTH = PUBLISHED_STATS['beauty']['avg_len']
MIN_LENGTH = 5  # 5-core


def beauty_like_sequences(num_users=BEAUTY_USERS, num_items=BEAUTY_ITEMS, mean_length=BEAUTY_MEAN_LENGTH,
                          seed=0):
    """user id -> item ids; lengths are 5 + a geometric tail, mean `mean_length` (Beauty's shape:
    most users near 5, a few hundred above 50)."""
    rng = np.random.default_rng(seed)
    tail = rng.geometric(1.0 / (mean_length - MIN_LENGTH + 1), size=num_users) - 1
    lengths = MIN_LENGTH + tail
    return {user + 1: rng.integers(1, num_items + 1, size=int(n)).tolist() for user, n in enumerate(lengths)}


def feature_table(num_items, dim, generator):
    """(N + 1, dim) L2-normalised rows like a sentence or image encoder's, row 0 = padding zeros."""
    table = torch.randn(num_items + 1, dim, generator=generator)
    table /= table.norm(dim=1, keepdim=True)
    table[0] = 0
    return table


def beauty_like_splits(num_users=BEAUTY_USERS, num_items=BEAUTY_ITEMS, max_len=50, seed=0):
    """The split tensors train.py uses (datasets.p5.split_examples) for Beauty-shaped sequences."""
    data = SimpleNamespace(sequences=beauty_like_sequences(num_users, num_items, seed=seed))
    return split_examples(data, max_len)


def beauty_like_model(sizes, num_blocks=1, num_items=BEAUTY_ITEMS, feature_dim=1024, dropout=0.1, seed=0):
    """FMRLRec with random text and image tables of width `feature_dim` each."""
    generator = torch.Generator().manual_seed(seed)
    text = feature_table(num_items, feature_dim, generator)
    image = feature_table(num_items, feature_dim, generator)
    torch.manual_seed(seed)
    return FMRLRec(num_items, sizes, text, image, num_blocks=num_blocks, dropout=dropout, attn_dropout=dropout)


PAPER_SIZES = ','.join(str(size) for size in PAPER_SIZE_LIST)  # as the --sizes option spells them


def add_workload_options(parser):
    """The workload's shape, shared by the benchmark and its memory probe (defaults: the paper's
    configuration on Beauty's shape)."""
    parser.add_argument('--batch_size', type=int, default=32)
    parser.add_argument('--eval_batch_size', type=int, default=64)
    parser.add_argument('--sizes', type=str, default=PAPER_SIZES)
    parser.add_argument('--blocks', type=int, default=1)
    parser.add_argument('--device', type=str, default='cpu')
    parser.add_argument('--users', type=int, default=BEAUTY_USERS)
    parser.add_argument('--items', type=int, default=BEAUTY_ITEMS)
    parser.add_argument('--feature_dim', type=int, default=1024, help='width of each feature table')
    return parser
