"""The training loop: the epochs, the optimiser and schedule, RNG states, torch.compile, several processes, and a
Trainer resumed from its recent checkpoint (docs/architecture.md)."""
