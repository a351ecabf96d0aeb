"""Random training batches built by the project's own example builder (datasets.p5)."""
import torch

from datasets.p5 import training_examples


def random_training_batch(lengths, length, num_items, seed=0):
    """(tokens, labels) for random sequences of the given lengths: labels = s[-L:], tokens = s[:-1][-L:]."""
    generator = torch.Generator().manual_seed(seed)
    sequences = {row: torch.randint(1, num_items + 1, (n,), generator=generator).tolist()
                 for row, n in enumerate(lengths)}
    return training_examples(sequences, length)
