"""A run's life on disk: the run folder and the one module that reads and writes it, the configuration and inputs a
run records, its per-epoch logs, a trained run loaded back, and the reports read from finished runs
(docs/architecture.md)."""
