"""Executor side: what runs inside each rank (one process per rank, started by the launcher); its entry point is
``entry.train_fn``."""
