"""Driver side: write jets as the project's parquet dataset (split by hash of jet_id) and read its metadata.

Layout of a dataset directory::

    DIR/train/part-*.parquet   DIR/val/...   DIR/test/...   DIR/_ucluster_dataset.json

The whole directory is staged under a temporary name and renamed into place when complete, and the metadata
file names the feature set and constituent count so training and inference cannot silently disagree.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ucluster_spark import schema, store
from ucluster_spark.config import DataConfig
from ucluster_spark.errors import INPUT_ERROR_MARKER, BadInput

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ROW_GROUP_BYTES = 8 * 1024 * 1024
"""A split's files hold one parquet row group each, of at most about this many bytes on disk (~3,600 jets of
100 x 8 float32): small enough to shard, large enough to stream."""
FILE_MULTIPLE = 8
"""A split that needs more files than ``data.files_per_split`` gets a multiple of this many, so 2, 4 or 8 ranks
get the same number of row groups."""


def files_for(split_bytes: float, files_per_split: int) -> int:
    """How many files (one row group each, of equal jets) a split of about ``split_bytes`` is written as. Ranks
    take every n-th row group, so row groups of unequal size make unequal shards: files of one full group and a
    remainder gave one of 2 ranks every full group (58/42 of the jets), the larger shard setting every step's pace."""
    needed = math.ceil(split_bytes / ROW_GROUP_BYTES)
    if needed <= files_per_split:
        return files_per_split
    return math.ceil(needed / FILE_MULTIPLE) * FILE_MULTIPLE


_HASH_BUCKETS = 1_000_000


class DatasetError(BadInput):
    """A dataset directory that cannot be used; the message names the path and the reason."""


@dataclass
class DatasetInfo:
    """The content of ``_ucluster_dataset.json``."""

    format_version: int
    feature_set: str
    feature_names: list[str]
    max_constituents: int
    classes: list[str]
    counts: dict[str, dict[str, int]]
    """split -> class name -> jets."""
    source: dict[str, Any]
    files: dict[str, dict[str, int]]
    """split -> parquet file name -> jets, for ``check_files``."""
    checksums: dict[str, dict[str, str]]
    """split -> parquet file name -> CRC-32 of its bytes, for ``verify_checksums``."""

    def n_jets(self, split: str) -> int:
        return int(sum(self.counts.get(split, {}).values()))

    def split_url(self, root: str | Path, split: str) -> str:
        return store.file_url(Path(store.local_path(root)) / split)


def is_dataset(root: Path) -> bool:
    """A directory this project wrote as a dataset (its metadata file is written last)."""
    return (root / schema.METADATA_FILE).is_file()


def load_info(root: str | Path) -> DatasetInfo:
    path = store.local_path(root) / schema.METADATA_FILE
    if not path.exists():
        raise DatasetError(f"{store.local_path(root)} is not a complete ucluster dataset: {path.name} is missing")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: unreadable dataset metadata ({err})") from err
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != FORMAT_VERSION:
        raise DatasetError(
            f"{path}: dataset format version {version!r}, but this ucluster-spark reads version {FORMAT_VERSION} "
            "(its columns and metadata may differ): write the dataset again with this version's generate or prepare"
        )
    if "files" not in raw or "checksums" not in raw:
        raise DatasetError(
            f"{path}: written by an earlier ucluster-spark, before every file's row count and checksum were recorded "
            "(nothing could check its files): write the dataset again with this version's generate or prepare"
        )
    try:
        return DatasetInfo(**raw)
    except TypeError as err:
        raise DatasetError(f"{path}: unreadable dataset metadata ({err})") from err


def check_compatible(info: DatasetInfo, data: DataConfig, where: str) -> None:
    """Refuse a dataset whose inputs differ from what the model is configured for."""
    if info.feature_set != data.feature_set or info.max_constituents != data.max_constituents:
        raise DatasetError(
            f"{where}: dataset has feature set {info.feature_set!r} with {info.max_constituents} constituents, "
            f"but the config asks for {data.feature_set!r} with {data.max_constituents}"
        )
    if info.classes != list(data.classes):
        raise DatasetError(f"{where}: dataset classes {info.classes} differ from data.classes {data.classes}")


GENERATION_FIELDS = (
    "classes",
    "jets_per_class",
    "generation_seed",
    "tasks_per_class",
    "mass_window",
    "underlying_event",
    "max_constituents",
    "feature_set",
    "split_fractions",
    "files_per_split",
)
"""The DataConfig fields that shape a generated dataset (an allow-list: a new training-only field cannot make a
cached sample look different, and a forgotten one fails the test that checks every field is classified)."""


def generation_key(data: DataConfig) -> str:
    """A directory name that changes whenever anything that shapes the generated dataset changes."""
    fields = {k: getattr(data, k) for k in GENERATION_FIELDS}
    digest = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
    return f"pythia-{'-'.join(data.classes)}-{data.jets_per_class}-s{data.generation_seed}-{digest}"


def split_column(fractions: dict[str, float]):
    """Deterministic split from a hash of jet_id (Spark's xxhash64 is stable across versions and hosts)."""
    from pyspark.sql import functions as F

    u = F.pmod(F.xxhash64(F.col(schema.JET_ID)), F.lit(_HASH_BUCKETS)) / F.lit(float(_HASH_BUCKETS))
    train_edge = fractions["train"]
    val_edge = train_edge + fractions["val"]
    return F.when(u < train_edge, F.lit("train")).when(u < val_edge, F.lit("val")).otherwise(F.lit("test"))


UNLABELLED = "unlabelled"
"""Key of the jets without a true class in ``DatasetInfo.counts``."""


def input_error_from(err: BaseException) -> DatasetError | None:
    """The input error an executor raised (errors.InputFileError), pulled out of Spark's task-failure text."""
    found = re.search(rf"{INPUT_ERROR_MARKER}: (.*)", str(err))
    return DatasetError(found.group(1).strip()) if found else None


def damaged_file_from(err: BaseException) -> DatasetError | None:
    """A dataset file Spark could not read (Hadoop's checksum of a local file failed, or its content cannot be
    decoded), named from Spark's task-failure text: bad input, not a failed job."""
    text = str(err)
    found = re.search(r"Encountered error while reading file (\S+?)\.? Details:", text)
    if not found:
        return None
    path = store.local_path(found.group(1))
    causes = re.findall(r"Caused by: [\w.$]*?([\w$]+(?:Exception|Error): [^\n]*)", text)
    why = causes[-1] if causes else "unreadable"
    return DatasetError(f"{path}: the file cannot be read ({why[:300]}; split {path.parent.name}); the dataset is "
                        "damaged: write it again or restore the file")  # fmt: skip


def write_dataset(
    spark,
    jets_df,
    output: str | Path,
    data: DataConfig,
    source: dict[str, Any] | Callable[[], dict[str, Any]],
    overwrite: bool = False,
) -> DatasetInfo:
    """Materialise ``jets_df`` (columns of ``schema.spark_schema()``) once, then write the split layout.

    ``source`` (provenance for the metadata) may be a callable, called after the source was read, e.g. to report
    counts that accumulators gathered during the read.
    """
    with dataset_output(output, overwrite) as final:
        info = _write_splits(spark, jets_df, final, data, source)
    log.info("wrote %s: %s", final, format_counts(info))
    return info


@contextlib.contextmanager
def dataset_output(output: str | Path, overwrite: bool) -> Iterator[Path]:
    """The dataset directory to write, held by this job while the block writes it (one writer per output), and
    refused unless it is free or a dataset ``overwrite`` may replace."""
    final = store.local_path(output)
    with store.exclusive_output(final, "ucluster dataset"):
        try:
            store.check_replaceable(final, "ucluster dataset", is_dataset, overwrite)
        except FileExistsError as err:
            raise DatasetError(str(err)) from None
        yield final


def _write_splits(
    spark, jets_df, final: Path, data: DataConfig, source: dict[str, Any] | Callable[[], dict[str, Any]]
) -> DatasetInfo:
    """``write_dataset`` while holding the output's lock."""
    from pyspark.sql import functions as F

    with store.atomic_directory(final, overwrite=True) as staging:
        raw_dir = staging / "raw-unsplit"
        try:
            # One pass over the (possibly expensive) source, e.g. Pythia running inside the tasks.
            jets_df.withColumn(schema.SPLIT, split_column(data.split_fractions)).write.parquet(store.file_url(raw_dir))
        except Exception as err:
            translated = input_error_from(err)
            if translated is None:
                raise
            raise translated from None
        raw = spark.read.parquet(store.file_url(raw_dir))
        counts: dict[str, dict[str, int]] = {s: {c: 0 for c in data.classes} for s in schema.SPLITS}
        for row in raw.groupBy(schema.SPLIT, schema.LABEL_NAME).count().collect():
            counts[row[schema.SPLIT]][row[schema.LABEL_NAME] or UNLABELLED] = int(row["count"])
        raw_bytes = sum(path.stat().st_size for path in raw_dir.glob("*.parquet"))
        bytes_per_jet = raw_bytes / max(sum(sum(per_class.values()) for per_class in counts.values()), 1)
        for split in schema.SPLITS:
            files = files_for(sum(counts[split].values()) * bytes_per_jet, data.files_per_split)
            (
                raw.filter(F.col(schema.SPLIT) == split)
                .drop(schema.SPLIT)
                .repartition(files)  # round-robin: files of equal jets (to one)
                .write.option("parquet.block.size", 4 * ROW_GROUP_BYTES)  # one row group per file
                .parquet(store.file_url(staging / split))
            )
        shutil.rmtree(raw_dir)
        kept = sum(sum(per_class.values()) for per_class in counts.values())
        if kept == 0:
            provenance = source() if callable(source) else source
            raise DatasetError(f"{final}: no jets kept" + _drop_reasons(provenance) + "; nothing was written")
        info = DatasetInfo(
            format_version=FORMAT_VERSION,
            feature_set=data.feature_set,
            feature_names=list(schema.feature_names(data.feature_set)),
            max_constituents=data.max_constituents,
            classes=list(data.classes),
            counts=counts,
            source=source() if callable(source) else source,
            files={split: parquet_rows(staging, split) for split in schema.SPLITS},
            checksums=file_checksums(spark, staging),
        )
        store.atomic_write_json(staging / schema.METADATA_FILE, asdict(info))
    return info


def _drop_reasons(provenance: dict[str, Any]) -> str:
    dropped = {k: v for k, v in (provenance.get("dropped") or {}).items() if v}
    read = provenance.get("jets_read")
    if not dropped:
        return f" from {read} jets read" if read is not None else ""
    reasons = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in sorted(dropped.items()))
    return f" from {read} jets read: dropped {reasons}" if read is not None else f": dropped {reasons}"


def parquet_rows(root: str | Path, split: str) -> dict[str, int]:
    """Jets per parquet file of one split, from the footers (no data is read)."""
    import pyarrow.parquet as pq

    rows = {}
    for path in sorted((store.local_path(root) / split).glob("*.parquet")):
        try:
            rows[path.name] = pq.ParquetFile(path).metadata.num_rows
        except Exception as err:  # pyarrow raises ArrowInvalid/OSError for truncated or foreign files
            raise DatasetError(f"{path}: not a readable parquet file ({err}); the dataset is damaged") from None
    return rows


def check_files(root: str | Path, info: DatasetInfo, splits: tuple[str, ...] = schema.SPLITS) -> None:
    """The parquet files of each split against the metadata, before any work reads them: a missing, extra or
    truncated file would otherwise train or assign on part of the data and report the full count."""
    root = store.local_path(root)
    for split in splits:
        found = parquet_rows(root, split)
        listed = info.files.get(split, {})
        if found != listed:
            problems = [f"missing {name} ({rows} jets)" for name, rows in listed.items() if name not in found]
            problems += [f"unexpected {name}" for name in found if name not in listed]
            problems += [
                f"{name} holds {found[name]} jets, the metadata lists {rows}"
                for name, rows in listed.items()
                if name in found and found[name] != rows
            ]
            raise DatasetError(f"{root / split}: the dataset is damaged: {'; '.join(problems)}; write it again")
        total = sum(found.values())
        if total != info.n_jets(split):
            raise DatasetError(
                f"{root / split}: the dataset is damaged: its {len(found)} parquet file(s) hold {total} jets, "
                f"{schema.METADATA_FILE} lists {info.n_jets(split)} (a file missing, extra or truncated); "
                "write it again"
            )


def _crc32(item: tuple[str, str, str]) -> tuple[str, str, str]:
    """(split, file name, path) -> (split, file name, CRC-32 of the file's bytes); runs in a Spark task."""
    import zlib

    split, name, path = item
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return split, name, f"{crc:08x}"


def file_checksums(spark, root: str | Path, splits: tuple[str, ...] = schema.SPLITS) -> dict[str, dict[str, str]]:
    """CRC-32 of every parquet file of ``splits``, one Spark task per file, where the data is (the bytes never
    travel to the driver)."""
    root = store.local_path(root)
    files = [(split, p.name, str(p)) for split in splits for p in sorted((root / split).glob("*.parquet"))]
    found: dict[str, dict[str, str]] = {split: {} for split in splits}
    if files:
        for split, name, crc in spark.sparkContext.parallelize(files, len(files)).map(_crc32).collect():
            found[split][name] = crc
    return found


def verify_checksums(spark, root: str | Path, info: DatasetInfo, splits: tuple[str, ...] = schema.SPLITS) -> None:
    """Every file's bytes against the CRC-32 recorded when the dataset was written, before any rank or task reads
    them: a damaged file whose footer survived passes ``check_files`` and would otherwise fail deep inside a job
    (or, worse, decode). Costs one read of the split, spread over the executors."""
    root = store.local_path(root)
    recorded = {split: info.checksums.get(split, {}) for split in splits}
    found = file_checksums(spark, root, splits)
    for split in splits:
        for name, crc in sorted(recorded[split].items()):
            if found[split].get(name, crc) != crc:
                raise DatasetError(
                    f"{root / split / name}: the file is damaged (CRC-32 {found[split][name]}, {crc} when written; "
                    f"split {split}); write the dataset again or restore the file"
                )


def row_groups(root: str | Path, split: str) -> int:
    """Parquet row groups of one split (footers only): the unit petastorm shards over ranks."""
    import pyarrow.parquet as pq

    files = sorted((store.local_path(root) / split).glob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_row_groups for f in files)


def check_shardable(root: str | Path, shard_count: int, splits: tuple[str, ...] = schema.SPLITS) -> None:
    """Every rank needs at least one row group of every split it reads, or it would wait for data forever."""
    for split in splits:
        groups = row_groups(root, split)
        if groups < shard_count:
            raise DatasetError(
                f"{store.local_path(root) / split}: {groups} parquet row group(s) cannot feed {shard_count} ranks "
                f"(each rank reads whole row groups); rewrite the dataset with data.files_per_split >= "
                f"{shard_count} or use fewer ranks"
            )


def check_filled(root: str | Path, split: str, columns: list[str]) -> None:
    """Training targets must exist for every jet (parquet footer null counts; no data is read)."""
    import pyarrow.parquet as pq

    for path in sorted((store.local_path(root) / split).glob("*.parquet")):
        meta = pq.ParquetFile(path).metadata
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        for column in columns:
            i = names.index(column)
            stats = [meta.row_group(g).column(i).statistics for g in range(meta.num_row_groups)]
            nulls = sum(s.null_count if s is not None and s.has_null_count else 0 for s in stats)
            if nulls:
                raise DatasetError(
                    f"{path}: column {column!r} is empty for {nulls} jet(s) but is an auxiliary target "
                    f"(data.aux_mass_columns); prepare the dataset with that column filled or train on 'mass'"
                )


def format_counts(info: DatasetInfo) -> str:
    """One line: jets per split and per class."""
    return "; ".join(
        f"{split} {info.n_jets(split)} (" + ", ".join(f"{c} {n}" for c, n in info.counts[split].items()) + ")"
        for split in schema.SPLITS
    )
