"""Executor side: the readers ``data.reader`` chooses between (registry.READERS), one module each. Every reader
gives a rank the row groups of the split's files in path order, every ``shard_count``-th from ``shard`` (petastorm's
rule), so a rank sees the same jets whichever reads them."""
