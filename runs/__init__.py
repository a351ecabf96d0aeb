"""A run's life on disk: the run folder, the configuration and inputs a run records, loading a trained run back,
and the reports and tables read from finished runs (docs/architecture.md)."""
