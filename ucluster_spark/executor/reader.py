"""Executor side: stream one rank's shard of a parquet split into ``tf.data``, with petastorm or pyarrow.

Each rank reads only its own row groups, a bounded number at a time, so memory does not grow with the dataset.
Both readers shard alike (petastorm's rule: the row groups of the split's files in path order, every
``shard_count``-th from ``shard``), so a rank sees the same jets whichever reads them; ``arrow`` needs no petastorm
(unmaintained, pinned to pyarrow < 13). No pyspark import here.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow.dataset as pads
import pyarrow.fs
import tensorflow as tf

from ucluster_spark import schema
from ucluster_spark.config.rules import READERS


def _petastorm_reader(url, shard, shard_count, columns, num_epochs, shuffle, seed, workers):
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


def shard_row_groups(url: str, shard: int, shard_count: int) -> list[pads.ParquetFileFragment]:
    """This shard's row groups as pyarrow fragments, by petastorm's rule (files in path order, row groups in file
    order, every ``shard_count``-th from ``shard``)."""
    filesystem, path = pyarrow.fs.FileSystem.from_uri(url)
    dataset = pads.dataset(path, format="parquet", filesystem=filesystem)
    row_groups = [
        piece
        for fragment in sorted(dataset.get_fragments(), key=lambda f: f.path)
        for piece in fragment.split_by_row_group()
    ]
    return [piece for index, piece in enumerate(row_groups) if index % shard_count == shard]


def _arrow_batches(url, shard, shard_count, columns, num_epochs, shuffle, seed) -> tf.data.Dataset:
    """One dict of numpy columns per row group of this shard (row groups in a seeded random order per pass when
    ``shuffle``), read by pyarrow one row group at a time."""
    pieces = shard_row_groups(url, shard, shard_count)
    if not pieces:
        raise ValueError(f"{url}: no row group for shard {shard} of {shard_count}")

    def columns_of(table) -> dict[str, np.ndarray]:
        out = {}
        for name in columns:
            column = table.column(name).combine_chunks()
            if name == schema.CONSTITUENTS:  # list<float> per jet, flattened: (jets, slots x features)
                out[name] = column.flatten().to_numpy().reshape(len(table), -1)
            else:
                out[name] = column.to_numpy(zero_copy_only=False)
        return out

    def generate():
        rng = np.random.default_rng(seed)
        passes = 0
        while num_epochs is None or passes < num_epochs:
            order = rng.permutation(len(pieces)) if shuffle else range(len(pieces))
            for i in order:
                yield columns_of(pieces[i].to_table(columns=columns))
            passes += 1

    example = columns_of(pieces[0].to_table(columns=columns).slice(0, 1))
    signature = {
        name: tf.TensorSpec([None, *value.shape[1:]], tf.string if value.dtype == object else tf.as_dtype(value.dtype))
        for name, value in example.items()
    }
    return tf.data.Dataset.from_generator(generate, output_signature=signature)


def shard_size(url: str, *, shard: int, shard_count: int, reader: str = "petastorm") -> int:
    """Jets in this rank's shard: from the row groups' footers (arrow), or by petastorm's own pass over the jet_id
    column; the same number either way."""
    if reader == "arrow":
        return sum(piece.row_groups[0].num_rows for piece in shard_row_groups(url, shard, shard_count))
    stream = _petastorm_reader(url, shard, shard_count, [schema.JET_ID], 1, False, 0, 2)
    try:
        return sum(len(batch.jet_id) for batch in stream)
    finally:  # not ``with stream``: its exit prints "Cache cleanup complete." for a cache we do not use
        stream.stop()
        stream.join()


@contextlib.contextmanager
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
) -> Iterator[tf.data.Dataset]:
    """A ``tf.data.Dataset`` of column batches (dicts, one per row group) of this rank's shard; a petastorm reader
    stops on exit."""
    if reader == "arrow":
        yield _arrow_batches(url, shard, shard_count, columns, num_epochs, shuffle, seed)
        return
    if reader != "petastorm":
        raise ValueError(f"unknown reader {reader!r}; expected one of {READERS}")
    from petastorm.tf_utils import make_petastorm_dataset

    stream = _petastorm_reader(url, shard, shard_count, columns, num_epochs, shuffle, seed, workers)
    try:
        with warnings.catch_warnings():  # "unicode strings come back as bytes": jet_id is decoded where it is used
            warnings.simplefilter("ignore", UnicodeWarning)
            dataset = make_petastorm_dataset(stream)
        yield dataset.map(lambda batch: batch._asdict())
    finally:
        stream.stop()
        stream.join()


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
