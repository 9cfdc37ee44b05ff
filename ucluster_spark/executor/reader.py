"""Executor side: one rank's shard of a parquet split as ``tf.data`` batches for training and evaluation.

The reader (``data.reader``: executor/readers/, chosen through registry.READERS) reads only the rank's own row
groups, a bounded number at a time, so memory does not grow with the dataset; every reader shards alike, so a rank
sees the same jets whichever reads them. No pyspark import here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import tensorflow as tf

from ucluster_spark import schema
from ucluster_spark.registry import READERS, part


def _reader(name: str):
    if name not in READERS:
        raise ValueError(f"unknown reader {name!r}; expected one of {list(READERS)}")
    return part(READERS, name, "executor")


def shard_size(url: str, *, shard: int, shard_count: int, reader: str = "petastorm") -> int:
    """Jets in this rank's shard, as the reader ``data.reader`` names counts them (the same number with each)."""
    return _reader(reader).shard_size(url, shard=shard, shard_count=shard_count)


def open_shard(
    url: str,
    *,
    shard: int,
    shard_count: int,
    columns: list[str],
    num_epochs: int | None,
    shuffle: bool,
    seed: int,
    workers: int = 2,
    reader: str = "petastorm",
) -> contextlib.AbstractContextManager[tf.data.Dataset]:
    """A ``tf.data.Dataset`` of column batches (dicts, one per row group) of this rank's shard, read by the reader
    ``data.reader`` names (registry.READERS); it stops its threads on exit."""
    return _reader(reader).open_shard(
        url, shard=shard, shard_count=shard_count, columns=columns, num_epochs=num_epochs, shuffle=shuffle,
        seed=seed, workers=workers,
    )  # fmt: skip


def fixed_pipeline(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """No tf.data autotuning: the pipeline has no tunable stage, and the autotuner's model thread makes deleting an
    iterator wait up to its optimisation period (measured: 13-40 s per epoch in a 2-rank run)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def per_jet(batches: tf.data.Dataset, max_constituents: int, n_features: int) -> tf.data.Dataset:
    """Row-group batches -> one dict per jet with constituents shaped (N, F)."""

    def reshape(batch):
        fields = dict(batch)
        fields[schema.CONSTITUENTS] = tf.reshape(
            tf.cast(fields[schema.CONSTITUENTS], tf.float32), [-1, max_constituents, n_features]
        )
        return fields

    return batches.map(reshape).unbatch()


@contextlib.contextmanager
def training_batches(
    url: str,
    *,
    shard: int,
    shard_count: int,
    max_constituents: int,
    n_features: int,
    batch_sizes: Sequence[int],
    shuffle_buffer: int,
    seed: int,
    target_columns: Sequence[str] = (schema.MASS,),
    num_epochs: int | None = 1,
    workers: int = 1,
    reader: str = "petastorm",
) -> Iterator[tf.data.Dataset]:
    """Shuffled batches of {constituents, *target_columns} from ``num_epochs`` passes over this rank's shard
    (None: endless), cut into ``batch_sizes`` in turn: one pass cut by ``EpochPlan.batch_sizes`` is one training
    epoch, every jet once. One reader thread by default: the jet order is then a function of the dataset files
    and ``seed`` alone, and one thread still decodes far faster than a rank trains (~240k jets/s measured on the
    30k-jet benchmark sample)."""
    columns = [schema.CONSTITUENTS, *target_columns]
    with open_shard(
        url,
        shard=shard,
        shard_count=shard_count,
        columns=columns,
        num_epochs=num_epochs,
        shuffle=True,
        seed=seed,
        workers=workers,
        reader=reader,
    ) as batches:
        yield fixed_pipeline(
            per_jet(batches, max_constituents, n_features)
            .shuffle(shuffle_buffer, seed=seed)
            .batch(max(batch_sizes))
            .rebatch(tf.constant(list(batch_sizes), tf.int64))
            .prefetch(2)
        )


def keep_by_jet_id(fraction: float, keep_id: bool = False):
    """A row-group batch -> the jets whose jet_id hashes below ``fraction`` of the hash range: a fixed subset of
    about that fraction, the same in every pass and on every host, whatever the rows' order (files list their jets
    grouped by the tasks that made them, so the first rows of a shard are no sample)."""
    buckets = 1 << 30
    threshold = int(fraction * buckets)

    def keep(batch):
        chosen = tf.strings.to_hash_bucket_fast(batch[schema.JET_ID], buckets) < threshold
        return {name: tf.boolean_mask(v, chosen) for name, v in batch.items() if keep_id or name != schema.JET_ID}

    return keep


@contextlib.contextmanager
def evaluation_batches(
    url: str,
    *,
    shard: int,
    shard_count: int,
    max_constituents: int,
    n_features: int,
    batch_size: int,
    columns: Sequence[str] = (),
    reader: str = "petastorm",
    sample_fraction: float = 1.0,
) -> Iterator[tf.data.Dataset]:
    """One ordered pass over this rank's shard, in batches of {constituents, *columns} (e.g. label, mass); with
    ``sample_fraction`` < 1, only the fixed subset ``keep_by_jet_id`` chooses (chosen before the forward pass,
    which is what costs)."""
    subsample = sample_fraction < 1.0
    read = [schema.CONSTITUENTS, *columns]
    if subsample and schema.JET_ID not in read:
        read.append(schema.JET_ID)
    with open_shard(
        url,
        shard=shard,
        shard_count=shard_count,
        columns=read,
        num_epochs=1,
        shuffle=False,
        seed=0,
        reader=reader,
    ) as batches:
        if subsample:
            batches = batches.map(keep_by_jet_id(sample_fraction, keep_id=schema.JET_ID in columns))
        yield fixed_pipeline(per_jet(batches, max_constituents, n_features).batch(batch_size).prefetch(2))
