"""The petastorm reader (``data.reader: petastorm``, the default): petastorm's batch reader of whole row groups,
decoded by a few threads."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import tensorflow as tf

from ucluster_spark import schema


def _reader(url, shard, shard_count, columns, num_epochs, shuffle, seed, workers):
    """petastorm reader of whole row groups ``shard::shard_count``, decoded by ``workers`` threads."""
    from petastorm import make_batch_reader

    return make_batch_reader(
        url,
        schema_fields=columns,
        cur_shard=shard,
        shard_count=shard_count,
        num_epochs=num_epochs,
        shuffle_row_groups=shuffle,
        seed=seed,
        reader_pool_type="thread",
        workers_count=workers,
    )


def shard_size(url: str, *, shard: int, shard_count: int) -> int:
    """Jets in this shard, by petastorm's own pass over the jet_id column."""
    stream = _reader(url, shard, shard_count, [schema.JET_ID], 1, False, 0, 2)
    try:
        return sum(len(batch.jet_id) for batch in stream)
    finally:  # not ``with stream``: its exit prints "Cache cleanup complete." for a cache we do not use
        stream.stop()
        stream.join()


@contextlib.contextmanager
def open_shard(
    url: str, *, shard: int, shard_count: int, columns: list[str], num_epochs: int | None, shuffle: bool, seed: int,
    workers: int,
) -> Iterator[tf.data.Dataset]:  # fmt: skip
    from petastorm.tf_utils import make_petastorm_dataset

    stream = _reader(url, shard, shard_count, columns, num_epochs, shuffle, seed, workers)
    try:
        with warnings.catch_warnings():  # "unicode strings come back as bytes": jet_id is decoded where it is used
            warnings.simplefilter("ignore", UnicodeWarning)
            dataset = make_petastorm_dataset(stream)
        yield dataset.map(lambda batch: batch._asdict())
    finally:
        stream.stop()
        stream.join()
