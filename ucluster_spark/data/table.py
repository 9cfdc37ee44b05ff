"""Jets from a table of the Spark catalog into a dataset (``prepare --input-table``), and cluster assignments into a
table (``evaluate --output-table``): for data kept as tables (Delta on Databricks, Hive/Glue/Unity catalogs).

The input table's column contract (``INPUT_COLUMNS``): one row per jet, ``jet_id`` (string or integer, unique),
``label`` (string: a class name; rows of classes not in ``data.classes`` are left out and counted), the particles'
four-momenta as arrays of equal length ``part_px part_py part_pz part_energy``, and optionally ``sd_mass``,
``tau21``, ``tau32``. The table is already partitioned: its partitions are the tasks, converted in the executors
with the rules every file layout follows (``rows.py``) and written as a dataset by the same writer.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ucluster_spark import logs, schema
from ucluster_spark.accumulators import counter_accumulator
from ucluster_spark.config import DataConfig
from ucluster_spark.data.dataset import DatasetError, DatasetInfo, write_dataset
from ucluster_spark.data.rows import RowFilter, jet_kinematics, kept_jets
from ucluster_spark.errors import InputFileError

log = logging.getLogger(__name__)

PARTICLES = ("part_px", "part_py", "part_pz", "part_energy")
OPTIONAL = (schema.SD_MASS, schema.TAU21, schema.TAU32)
INPUT_COLUMNS = ("jet_id", "label", *PARTICLES)
TABLE_NAME = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*){0,2}|`[^`]+`(\.`[^`]+`)?|\w+\.`[^`]+`")
"""``[catalog.][schema.]table``, back-quoted parts, or ``format.`path``` (e.g. delta.`/mnt/jets`)."""
ASSIGNMENT_EXTRA = ("run_id", "model_version")
TABLE_MODES = ("append", "overwrite")


def check_table_name(name: str, flag: str) -> None:
    if not TABLE_NAME.fullmatch(name):
        raise DatasetError(f"{flag} {name!r}: not a table name ([catalog.][schema.]table, or format.`path`)")


def read_input_table(spark, name: str):
    """The table, its columns checked against the contract; DatasetError naming the table and the column."""
    from pyspark.sql.types import ArrayType, IntegralType, NumericType, StringType

    check_table_name(name, "--input-table")
    try:
        frame = spark.table(name) if "`/" not in name else spark.sql(f"SELECT * FROM {name}")
    except Exception as err:  # AnalysisException: no such table, no such format
        first = str(err).strip().splitlines()[0][:300]
        raise DatasetError(f"--input-table {name}: cannot be read ({first})") from None
    types = {field.name: field.dataType for field in frame.schema.fields}
    if missing := [c for c in INPUT_COLUMNS if c not in types]:
        raise DatasetError(f"{name}: no column '{missing[0]}' (the contract: {list(INPUT_COLUMNS)}; docs/data.md)")
    wrong = {"jet_id": not isinstance(types["jet_id"], StringType | IntegralType),
             "label": not isinstance(types["label"], StringType)}  # fmt: skip
    for column in PARTICLES:
        kind = types[column]
        wrong[column] = not (isinstance(kind, ArrayType) and isinstance(kind.elementType, NumericType))
    for column in OPTIONAL:
        wrong[column] = column in types and not isinstance(types[column], NumericType)
    if bad := [c for c, is_wrong in wrong.items() if is_wrong]:
        expected = {"jet_id": "string or integer", "label": "string (a class name)"}
        wanted = expected.get(bad[0], "array of numbers" if bad[0] in PARTICLES else "a number")
        raise DatasetError(f"{name}: column '{bad[0]}' is {types[bad[0]].simpleString()}, expected {wanted}")
    return frame.select(*INPUT_COLUMNS, *[c for c in OPTIONAL if c in types])


def table_rows(frame: pd.DataFrame, name: str, data: DataConfig, drop_bad_jets: bool) -> tuple[pd.DataFrame, Counter]:
    """Executor side: one batch of the table's rows as jets in the dataset schema, and the jets left out by why."""
    classes = list(data.classes)
    ids = frame["jet_id"].astype(str).to_numpy()
    class_of_jet = frame["label"].fillna("").astype(str).to_numpy()
    selection = RowFilter(name, 0, len(frame), class_of_jet, classes, drop_bad_jets, ids=ids)
    counts = np.array([len(v) if v is not None else 0 for v in frame[PARTICLES[0]]])
    for column in PARTICLES[1:]:
        other = np.array([len(v) if v is not None else 0 for v in frame[column]])
        if (bad := np.flatnonzero(other != counts)).size:
            raise InputFileError(f"{name}: jet {ids[bad[0]]!r} has {other[bad[0]]} values in '{column}' but "
                                 f"{counts[bad[0]]} in '{PARTICLES[0]}'")  # fmt: skip
    width = max(int(counts.max(initial=0)), 1)
    real = np.arange(width)[None, :] < counts[:, None]
    p4 = np.zeros((len(frame), width, 4))
    for k, column in enumerate(PARTICLES):
        parts = [np.asarray(values, np.float64) for values, n in zip(frame[column], counts, strict=True) if n]
        p4[..., k][real] = np.concatenate(parts) if parts else []  # row-major mask: jet by jet, particle order
        selection.non_finite(f"column '{column}'", p4[..., k])
    p4 = np.nan_to_num(p4)
    selection.no_constituents(counts, f"'{PARTICLES[0]}' is empty")
    selection.unphysical_particles(p4, real, f"columns {list(PARTICLES)}")
    jet = jet_kinematics(p4.sum(axis=1))  # the sum of its particles
    selection.mass_window(jet[schema.MASS], data.mass_range)
    columns = {c: frame[c].to_numpy(np.float64) for c in OPTIONAL if c in frame}
    out, dropped = kept_jets(selection, class_of_jet, p4, real, counts, jet, data, columns)
    out[schema.JET_ID] = ids[selection.rows]  # the table's own IDs, not positions in a batch
    return out, dropped


def prepare_table(
    spark, name: str, output: str | Path, data: DataConfig, drop_bad_jets: bool = False, overwrite: bool = False
) -> DatasetInfo:
    """The jets of the table ``name`` as a dataset at ``output`` (atomic, as every dataset write)."""
    table = read_input_table(spark, name)
    dropped = counter_accumulator(spark)

    def body(frames):  # shipped to executors
        logs.configure()
        for frame in frames:
            jets, why = table_rows(frame, name, data, drop_bad_jets)
            dropped.add(why)
            if len(jets):
                yield jets

    def provenance() -> dict[str, Any]:
        return {"reader": "table", "input": name, "mass_window": list(data.mass_window) or None,
                "dropped": {k: int(v) for k, v in sorted(dropped.value.items())}}  # fmt: skip

    log.info("table %s: %d partition(s)", name, table.rdd.getNumPartitions())
    info = write_dataset(spark, table.mapInPandas(body, schema=schema.spark_schema()), output, data, provenance,
                         overwrite=overwrite)  # fmt: skip
    if any(info.source.get("dropped", {}).values()):
        log.info("dropped: %s", info.source["dropped"])
    return info


def table_holds(spark, name: str, run_id: str) -> bool:
    """True if the table exists and has rows of ``run_id``."""
    from pyspark.sql import functions as F

    return spark.catalog.tableExists(name) and spark.table(name).where(F.col("run_id") == run_id).limit(1).count() > 0


def check_assignments_target(spark, name: str, run_id: str, mode: str) -> None:
    """Before any work: the table name, the mode, and (append) a run ID the table must not hold yet."""
    check_table_name(name, "--output-table")
    if mode not in TABLE_MODES:
        raise DatasetError(f"evaluate.table_mode: {mode!r} is not one of {list(TABLE_MODES)}")
    if mode == "append" and table_holds(spark, name, run_id):
        raise DatasetError(f"--output-table {name} already holds run ID {run_id!r}: pass --table-mode overwrite "
                           "to replace its rows, or another --run-id")  # fmt: skip


def write_assignments_table(
    spark, assignments_url: str, name: str, run_id: str, model_version: str, mode: str, table_format: str
) -> int:
    """Append the assignments of one evaluation to the table ``name`` (made on first use, partitioned by
    ``run_id``), or with ``mode="overwrite"`` replace that run ID's rows only; returns the rows written. A run ID the
    table already holds is refused in append mode (a rerun would count its jets twice)."""
    from pyspark.sql import functions as F

    check_assignments_target(spark, name, run_id, mode)
    rows = (spark.read.parquet(assignments_url).withColumn("run_id", F.lit(run_id))
            .withColumn("model_version", F.lit(model_version)))  # fmt: skip
    if not spark.catalog.tableExists(name):
        rows.write.format(table_format).partitionBy("run_id").saveAsTable(name)
        return rows.count()
    held = table_holds(spark, name, run_id)
    existing = spark.table(name).columns
    if missing := [c for c in rows.columns if c not in existing]:
        raise DatasetError(f"--output-table {name}: has no column '{missing[0]}'; it is not an assignments table")
    if table_format == "delta":
        (rows.select(*existing).write.format("delta").mode("overwrite" if held else "append")
         .option("replaceWhere", f"run_id = '{run_id}'").saveAsTable(name))  # fmt: skip
    else:  # insertInto matches by position: the table's own column order; only this run's partition is replaced
        key, previous = (
            "spark.sql.sources.partitionOverwriteMode",
            spark.conf.get("spark.sql.sources.partitionOverwriteMode", "static"),
        )
        spark.conf.set(key, "dynamic")  # a session setting only (not a writer option for insertInto)
        try:
            rows.select(*existing).write.insertInto(name, overwrite=bool(held))
        finally:
            spark.conf.set(key, previous)
    return rows.count()
