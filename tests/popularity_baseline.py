"""Popularity ranking: items ordered by how often they occur in the training sequences."""
import torch

from evaluation.evaluate import metrics_from_ranks
from evaluation.metrics import target_ranks


def popularity_scores(train_sequences, num_items):
    counts = torch.zeros(num_items + 1)
    for items in train_sequences.values():
        counts += torch.bincount(torch.tensor(items, dtype=torch.long), minlength=num_items + 1).float()
    counts[0] = float('-inf')
    return counts


def popularity_metrics(train_sequences, num_items, examples, ks):
    """Metrics of the same ranking for every user (a single 'size' keyed 0). Counts tie often (on the
    demo, 98% of the targets): ties are read in the target's favour, the baseline's upper bound, so
    that a model compared with it has to beat its best case."""
    _, _, targets, _ = examples
    scores = popularity_scores(train_sequences, num_items).expand(len(targets), -1)
    return metrics_from_ranks(target_ranks(scores, targets).unsqueeze(0), [0], ks, ties='first')[0]
