"""Evaluation over a catalogue much larger than the histories: the per-item LRU inputs are computed
only for the items the histories hold (evaluation/evaluate.compact_inputs), with the same ranks."""
import pytest
import torch

from evaluation.evaluate import compact_inputs, evaluate_ranks
from evaluation.metrics import exact_ranks
from model.fmrlrec import FMRLRec
from model.reference import reference_ranks

NUM_ITEMS = 300


def test_compaction_renumbers_the_inputs_into_the_rows_they_use():
    table = torch.arange(NUM_ITEMS + 1, dtype=torch.float32).unsqueeze(1).repeat(1, 3)
    inputs = torch.tensor([[0, 0, 7, 250], [0, 3, 7, 7]])
    compacted, rows = compact_inputs(inputs, table)
    assert rows[:, 0].tolist() == [0, 3, 7, 250]
    assert torch.equal(rows[compacted], table[inputs])  # the same rows behind every token; padding stays 0
    assert compacted[0, :2].tolist() == [0, 0]
    full = torch.arange(1, NUM_ITEMS + 1).reshape(3, -1)  # every item in some history: nothing to gain
    assert compact_inputs(full, table)[1] is table


@pytest.mark.parametrize('num_blocks', [1, 2])
def test_ranks_with_compacted_inputs_equal_the_reference(num_blocks, monkeypatch):
    torch.manual_seed(0)
    text = torch.randn(NUM_ITEMS + 1, 12)
    text[0] = 0
    model = FMRLRec(NUM_ITEMS, [4, 8, 16], text, None, num_blocks=num_blocks, dropout=0.0, attn_dropout=0.0).eval()
    generator = torch.Generator().manual_seed(2)
    tokens = torch.randint(1, 40, (9, 12), generator=generator)  # histories over items 1..39 only
    tokens[:4, :5] = 0                                           # some shorter histories
    targets = torch.randint(1, NUM_ITEMS + 1, (9,), generator=generator)
    rows = []
    real = model.first_lru_inputs
    monkeypatch.setattr(model, 'first_lru_inputs', lambda table: rows.append(len(table)) or real(table))
    ranks = evaluate_ranks(model, tokens, targets, None, 3, batch_size=4, progress=False)
    assert rows == [len(torch.unique(tokens[tokens > 0])) + 1]  # the padding row and the items the histories hold
    assert torch.equal(ranks, exact_ranks(reference_ranks(model, tokens, targets)))
