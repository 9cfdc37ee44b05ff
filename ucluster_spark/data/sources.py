"""Driver side: the Spark jobs that produce datasets (Pythia generation, hls4ml ingestion) and dataset lookup.

The heavy work runs in executors (``simulate.generate_partition``, ``ingest.read_slice``); these functions plan the
tasks, ship plain values, and hand the resulting DataFrame to ``dataset.write_dataset``.
"""

from __future__ import annotations

import glob
import json
import logging
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from pyspark.accumulators import AccumulatorParam

from ucluster_spark import logs, schema, store
from ucluster_spark.config import DataConfig
from ucluster_spark.data.dataset import (
    DatasetError,
    DatasetInfo,
    check_compatible,
    format_counts,
    generation_key,
    is_dataset,
    load_info,
    write_dataset,
)

log = logging.getLogger(__name__)

ROWS_PER_INGEST_TASK = 2500
"""hls4ml files hold 10,000 jets: four tasks per file keep both cores busy and bound each task's memory."""


class CounterParam(AccumulatorParam):
    """Accumulates ``Counter``s: executors report why they dropped jets, the driver adds them up."""

    def zero(self, value):
        return Counter()

    def addInPlace(self, a, b):
        a.update(b)
        return a


def generate(spark, data: DataConfig, output: str | Path, overwrite: bool = False) -> DatasetInfo:
    """Run Pythia inside Spark tasks (one task per (class, seed)) and write the dataset."""
    from ucluster_spark.data.simulate import generate_partition, plan_tasks

    tasks = plan_tasks(data.classes, data.jets_per_class, data.tasks_per_class, data.generation_seed)
    rows = [asdict(t) for t in tasks]
    task_df = spark.createDataFrame(spark.sparkContext.parallelize(rows, numSlices=len(rows)))
    max_constituents, feature_set = data.max_constituents, data.feature_set
    mass_window, underlying_event = tuple(data.mass_window) or None, data.underlying_event
    dropped = spark.sparkContext.accumulator(Counter(), CounterParam())

    def body(frames):  # shipped to executors: plain values only
        logs.configure()  # an executor is another process
        rejected: Counter = Counter()
        yield from generate_partition(frames, max_constituents, feature_set, mass_window, underlying_event, rejected)
        dropped.add(rejected)

    log.info(
        "%d Pythia tasks: %d jets per class of %s%s%s",
        len(tasks),
        data.jets_per_class,
        data.classes,
        f", {mass_window[0]:g} < mass < {mass_window[1]:g} GeV" if mass_window else "",
        "" if underlying_event else ", no underlying event (PartonLevel:MPI = off)",
    )
    jets = task_df.mapInPandas(body, schema=schema.spark_schema())

    def source():
        return {
            "generator": "pythia8",
            "classes": data.classes,
            "jets_per_class": data.jets_per_class,
            "generation_seed": data.generation_seed,
            "tasks": len(tasks),
            "mass_window": list(mass_window) if mass_window else None,
            "underlying_event": underlying_event,
            "dropped": {"outside_mass_window": int(dropped.value["outside_mass_window"])},
        }

    info = write_dataset(spark, jets, output, data, source, overwrite=overwrite)
    if mass_window:
        log.info("dropped: %s", info.source["dropped"])
    return info


def find_inputs(pattern: str) -> list[str]:
    """Files matching a glob (or a comma-separated list of globs), checked for clashing jet ids."""
    paths = sorted({p for part in pattern.split(",") if part for p in glob.glob(part.strip())})
    if not paths:
        raise DatasetError(f"--input {pattern!r} matches no file")
    if folders := [p for p in paths if Path(p).is_dir()]:
        raise DatasetError(
            f"--input {pattern!r}: {folders[0]} is a directory; give its HDF5 files, e.g. --input '{folders[0]}/*.h5'"
        )
    clashes = [name for name, n in Counter(Path(p).name for p in paths).items() if n > 1]
    if clashes:
        raise DatasetError(
            f"--input {pattern!r}: several files are named {clashes[0]!r}; jet ids are '<file name>:<row>', "
            "so file names must be unique"
        )
    return paths


def prepare_hls4ml(
    spark,
    pattern: str,
    output: str | Path,
    data: DataConfig,
    drop_bad_jets: bool = False,
    overwrite: bool = False,
) -> DatasetInfo:
    """Ingest hls4ml-layout HDF5 files inside executors (jets outside ``data.mass_window`` dropped) and write the
    dataset."""
    from ucluster_spark.data.ingest import FileLayout, InputFileError, inspect_file, read_slice, slices

    paths = find_inputs(pattern)
    try:  # structure first, on the driver: a bad file fails before any task starts
        layouts = [inspect_file(p, data.classes, data.feature_set) for p in paths]
    except InputFileError as err:
        raise DatasetError(err.detail) from None
    tasks = [(layout, start, stop) for layout in layouts for start, stop in slices(layout, ROWS_PER_INGEST_TASK)]
    n_input = sum(layout.n_jets for layout in layouts)
    log.info("%d file(s), %d jets, %d tasks", len(paths), n_input, len(tasks))

    dropped = spark.sparkContext.accumulator(Counter(), CounterParam())
    classes, feature_set, max_constituents = list(data.classes), data.feature_set, data.max_constituents
    mass_window = tuple(data.mass_window) or None
    rows = [{"layout": json.dumps(asdict(layout)), "start": start, "stop": stop} for layout, start, stop in tasks]
    task_df = spark.createDataFrame(spark.sparkContext.parallelize(rows, numSlices=len(rows)))

    def body(frames):  # executors: read one slice at a time
        logs.configure()
        for frame in frames:
            for record in frame.to_dict("records"):
                layout = FileLayout(**json.loads(record["layout"]))
                jets, why = read_slice(
                    layout,
                    record["start"],
                    record["stop"],
                    classes,
                    feature_set,
                    max_constituents,
                    mass_window,
                    drop_bad_jets,
                )
                dropped.add(Counter(why))
                log.info(
                    "%s rows %d-%d: %d jets kept",
                    Path(layout.path).name,
                    record["start"],
                    record["stop"] - 1,
                    len(jets),
                )
                if len(jets):  # a slice may keep no jet (mass window, classes, dropped jets): nothing to write
                    yield jets

    jets = task_df.mapInPandas(body, schema=schema.spark_schema())

    def source():
        return {
            "reader": "hls4ml",
            "input": pattern,
            "files": [Path(p).name for p in paths],
            "jets_read": n_input,
            "mass_window": list(mass_window) if mass_window else None,
            "dropped": {k: int(v) for k, v in sorted(dropped.value.items())},
        }

    info = write_dataset(spark, jets, output, data, source, overwrite=overwrite)
    log.info("dropped: %s", info.source["dropped"])
    return info


def locate_or_generate(spark, data: DataConfig) -> tuple[Path, DatasetInfo]:
    """The configured dataset, or the cached generated sample for this config (made when missing)."""
    if data.path:
        root = store.local_path(data.path)
        info = load_info(root)
        check_compatible(info, data, str(root))
        return root, info
    root = store.local_path(data.generated_root) / generation_key(data)
    if is_dataset(root):
        info = load_info(root)
        log.info("reusing generated sample %s: %s", root, format_counts(info))
        return root, info
    return root, generate(spark, data, root, overwrite=root.exists())
