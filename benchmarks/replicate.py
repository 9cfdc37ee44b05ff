"""Driver side: a larger dataset made of copies of a real one's training jets, for load and scale tests.

Generating millions of jets with Pythia takes days on a few cores; what a scale test needs is the bytes, the row
groups and the jet count of a large dataset. ``replicate_training_split`` writes ``factor`` copies of the source's
training split under new jet ids (``<id>#r<copy>``), one Spark job with no shuffle, and copies the validation and
test splits unchanged (so per-epoch and final measurements stay bounded and comparable across sizes). The metadata
says what was done: ``source.generator = "replica"``, with the source dataset and the factor. It is no new physics:
accuracy is measured on the real sample.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ucluster_spark import schema, store
from ucluster_spark.data.dataset import (
    ROW_GROUP_BYTES,
    DatasetError,
    DatasetInfo,
    check_files,
    dataset_output,
    file_checksums,
    format_counts,
    load_info,
    parquet_rows,
)

log = logging.getLogger(__name__)

REPLICA_SEPARATOR = "#r"


def replicate_training_split(
    spark,
    source: str | Path,
    output: str | Path,
    factor: int,
    jets_per_file: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``output`` = ``source`` with its training split copied ``factor`` times under new ids; returns what
    was written (jets, bytes, seconds). The copies are written copy after copy, each in the source's order, in
    files of one row group of ``jets_per_file`` jets (default: the source's largest training file), the layout
    ``dataset.write_dataset`` gives a split, so the ranks' shards are as even as a real dataset's."""

    if factor < 1:
        raise DatasetError(f"replication factor must be >= 1, got {factor}")
    source = store.local_path(source)
    info = load_info(source)
    check_files(source, info)
    jets_per_file = jets_per_file or max(info.files["train"].values())
    started = time.time()
    with dataset_output(output, overwrite) as final:
        written = _write_replicas(spark, source, info, final, factor, jets_per_file)
    seconds = time.time() - started
    size = sum(f.stat().st_size for f in (final / "train").glob("*.parquet"))
    log.info("wrote %s: %s (training split = %d copies of %s)", final, format_counts(written), factor, source)
    return {
        "path": str(final),
        "factor": factor,
        "train_jets": written.n_jets("train"),
        "train_files": len(written.files["train"]),
        "train_bytes": size,
        "seconds": round(seconds, 2),
        "jets_per_second": round(written.n_jets("train") / seconds, 1),
    }


def _write_replicas(
    spark, source: Path, info: DatasetInfo, final: Path, factor: int, jets_per_file: int
) -> DatasetInfo:
    """``replicate_training_split`` while holding the output's lock: the copies, then the metadata, atomically."""
    from pyspark.sql import functions as F

    train = spark.read.parquet(store.file_url(source / "train"))
    copies = spark.range(0, factor, 1, numPartitions=max(1, min(factor, spark.sparkContext.defaultParallelism * 4)))
    replicas = (
        copies.crossJoin(F.broadcast(train))  # copies streamed, the source split broadcast: no shuffle
        .withColumn(schema.JET_ID, F.concat(F.col(schema.JET_ID), F.lit(REPLICA_SEPARATOR), F.col("id").cast("string")))
        .select(*train.columns)
    )
    with store.atomic_directory(final, overwrite=True) as staging:
        (
            replicas.write.option("parquet.block.size", 4 * ROW_GROUP_BYTES)  # one row group per file
            .option("maxRecordsPerFile", jets_per_file)
            .parquet(store.file_url(staging / "train"))
        )
        for split in ("val", "test"):
            shutil.copytree(source / split, staging / split)
        counts = {**info.counts, "train": {c: n * factor for c, n in info.counts["train"].items()}}
        files = {split: parquet_rows(staging, split) for split in schema.SPLITS}
        provenance = {"generator": "replica", "replicated_from": str(source), "factor": factor, "source": info.source}
        written = replace(info, counts=counts, files=files, source=provenance, checksums=file_checksums(spark, staging))
        store.atomic_write_json(staging / schema.METADATA_FILE, asdict(written))
    return written
