"""Evaluation without training: the metrics, ranking every user of a split, the test by target popularity, sharding
over processes, and the final test of a run's best checkpoint (docs/architecture.md)."""
