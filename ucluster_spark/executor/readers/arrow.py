"""The arrow reader (``data.reader: arrow``): pyarrow reads this shard's row groups one at a time, in a seeded
random order per pass; the shard sizes come from the parquet footers without reading data. Needs no petastorm
(unmaintained, pinned to pyarrow < 13)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pyarrow.dataset as pads
import pyarrow.fs
import tensorflow as tf

from ucluster_spark import schema


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


def _batches(url, shard, shard_count, columns, num_epochs, shuffle, seed) -> tf.data.Dataset:
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


def shard_size(url: str, *, shard: int, shard_count: int) -> int:
    """Jets in this shard, from the row groups' footers."""
    return sum(piece.row_groups[0].num_rows for piece in shard_row_groups(url, shard, shard_count))


@contextlib.contextmanager
def open_shard(
    url: str, *, shard: int, shard_count: int, columns: list[str], num_epochs: int | None, shuffle: bool, seed: int,
    workers: int,
) -> Iterator[tf.data.Dataset]:  # fmt: skip
    """``workers`` is unused: one row group is read at a time."""
    yield _batches(url, shard, shard_count, columns, num_epochs, shuffle, seed)
