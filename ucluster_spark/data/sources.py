"""Driver side: the Spark jobs that produce datasets, from any ``JetSource`` (Pythia generation, or files in a
layout of ``formats/``, chosen by name from ``registry.SOURCES``), and dataset lookup.

A source plans its tasks on the driver and reads each task's jets in an executor (``simulate.generate_jets``,
``formats.hls4ml.read_slice``); ``build_dataset`` runs them and hands the jets to ``dataset.write_dataset``.
"""

from __future__ import annotations

import glob
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pandas as pd

from ucluster_spark import logs, schema, store
from ucluster_spark.accumulators import counter_accumulator
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
from ucluster_spark.errors import InputFileError

log = logging.getLogger(__name__)


class JetSource(Protocol):
    """Where a dataset's jets come from, as Spark tasks. The driver plans the tasks (plain values, checked before
    any task starts); each task reads its jets inside an executor; the dataset's metadata records the provenance.
    ``build_dataset`` does the rest (tasks, progress, counts of dropped jets, the atomic write) for every source.
    The object is shipped to the executors: plain values only."""

    def tasks(self) -> list[dict[str, Any]]:
        """One JSON-able description per Spark task."""

    def describe(self, n_tasks: int) -> str:
        """The one line logged as the job starts."""

    def read(self, task: dict[str, Any], dropped: Counter) -> Iterator[pd.DataFrame]:
        """Executor side: the task's jets in the dataset schema; jets left out are counted in ``dropped`` by why."""

    def provenance(self, n_tasks: int, dropped: Counter) -> dict[str, Any]:
        """What the dataset's metadata records as its ``source``."""


def build_dataset(
    spark, source: JetSource, output: str | Path, data: DataConfig, overwrite: bool = False
) -> DatasetInfo:
    """Run ``source``'s tasks in Spark (one task each) and write their jets as a dataset."""
    tasks = source.tasks()
    rows = [{"task": json.dumps(task)} for task in tasks]
    task_df = spark.createDataFrame(spark.sparkContext.parallelize(rows, numSlices=len(rows)))
    dropped = counter_accumulator(spark)

    def body(frames):  # shipped to executors
        logs.configure()  # an executor is another process
        for frame in frames:
            for record in frame.to_dict("records"):
                why: Counter = Counter()
                for jets in source.read(json.loads(record["task"]), why):
                    if len(jets):  # a task may keep no jet (mass window, classes, dropped jets)
                        yield jets
                dropped.add(why)

    log.info("%s", source.describe(len(tasks)))
    jets = task_df.mapInPandas(body, schema=schema.spark_schema())
    info = write_dataset(
        spark, jets, output, data, lambda: source.provenance(len(tasks), dropped.value), overwrite=overwrite
    )
    if any(info.source.get("dropped", {}).values()):
        log.info("dropped: %s", info.source["dropped"])
    return info


@dataclass(frozen=True)
class PythiaSource:
    """W/Z/top (or g/q) jets made by Pythia 8 + FastJet, one task per (class, seed) (data/simulate.py)."""

    data: DataConfig

    def tasks(self) -> list[dict[str, Any]]:
        from ucluster_spark.data.simulate import plan_tasks

        d = self.data
        return [asdict(t) for t in plan_tasks(d.classes, d.jets_per_class, d.tasks_per_class, d.generation_seed)]

    def describe(self, n_tasks: int) -> str:
        d, window = self.data, self.data.mass_window
        return (
            f"{n_tasks} Pythia tasks: {d.jets_per_class} jets per class of {d.classes}"
            + (f", {window[0]:g} < mass < {window[1]:g} GeV" if window else "")
            + ("" if d.underlying_event else ", no underlying event (PartonLevel:MPI = off)")
        )

    def read(self, task: dict[str, Any], dropped: Counter) -> Iterator[pd.DataFrame]:
        from ucluster_spark.data.simulate import GenerationTask, generate_jets

        d = self.data
        yield from generate_jets(GenerationTask(**task), d.max_constituents, d.feature_set,
                                 mass_window=d.mass_range, underlying_event=d.underlying_event,
                                 rejected=dropped)  # fmt: skip

    def provenance(self, n_tasks: int, dropped: Counter) -> dict[str, Any]:
        d = self.data
        return {
            "generator": "pythia8",
            "classes": d.classes,
            "jets_per_class": d.jets_per_class,
            "generation_seed": d.generation_seed,
            "tasks": n_tasks,
            "mass_window": list(d.mass_window) or None,
            "underlying_event": d.underlying_event,
            "dropped": {"outside_mass_window": int(dropped["outside_mass_window"])},
        }


def generate(spark, data: DataConfig, output: str | Path, overwrite: bool = False) -> DatasetInfo:
    """Run Pythia inside Spark tasks (one task per (class, seed)) and write the dataset."""
    return build_dataset(spark, PythiaSource(data), output, data, overwrite)


def find_inputs(pattern: str, files: str = "*") -> list[str]:
    """Files matching a glob (or a comma-separated list of globs), checked for clashing jet ids; ``files`` is the
    layout's file glob, for the message when a folder is given."""
    paths = sorted({p for part in pattern.split(",") if part for p in glob.glob(part.strip())})
    if not paths:
        raise DatasetError(f"--input {pattern!r} matches no file")
    if folders := [p for p in paths if Path(p).is_dir()]:
        raise DatasetError(
            f"--input {pattern!r}: {folders[0]} is a directory; give the files in it, e.g. "
            f"--input '{folders[0]}/{files}'"
        )
    clashes = [name for name, n in Counter(Path(p).name for p in paths).items() if n > 1]
    if clashes:
        raise DatasetError(
            f"--input {pattern!r}: several files are named {clashes[0]!r}; jet ids are '<file name>:<row>', "
            "so file names must be unique"
        )
    return paths


@dataclass(frozen=True)
class FileSource:
    """A ``JetSource`` over files of one layout (data/formats/): ``open`` checks every file's structure on the
    driver (``inspect``), so a bad file fails before any task starts; each task reads one range of rows of one file
    in an executor (``read_rows``). A layout subclasses it with its ``name``, ``rows_per_task`` and those two
    functions, plain values in and out; the rest (tasks, progress, provenance) is here once."""

    pattern: str
    data: DataConfig
    drop_bad_jets: bool = False
    layouts: tuple = ()

    name: ClassVar[str] = ""
    rows_per_task: ClassVar[int] = 10_000
    files: ClassVar[str] = "*"
    """The layout's file names as a glob (``*.h5``, ``*.root``): the example when a folder is given as input."""

    @staticmethod
    def inspect(path: str, data: DataConfig) -> dict[str, Any]:
        """Driver side: the file's structure as plain values, at least ``path`` and ``n_jets``; raises
        ``errors.InputFileError`` naming the file and what is wrong."""
        raise NotImplementedError

    @staticmethod
    def read_rows(
        layout: dict[str, Any], start: int, stop: int, data: DataConfig, drop_bad_jets: bool
    ) -> tuple[pd.DataFrame, Counter]:
        """Executor side: rows [start, stop) of one file as jets in the dataset schema, and the jets left out by
        why."""
        raise NotImplementedError

    @classmethod
    def open(cls, pattern: str, data: DataConfig, drop_bad_jets: bool = False) -> FileSource:
        paths = find_inputs(pattern, cls.files)
        try:
            layouts = tuple(cls.inspect(path, data) for path in paths)
        except InputFileError as err:
            raise DatasetError(err.detail) from None
        return cls(pattern, data, drop_bad_jets, layouts)

    def tasks(self) -> list[dict[str, Any]]:
        return [{"layout": layout, "start": start, "stop": min(start + self.rows_per_task, layout["n_jets"])}
                for layout in self.layouts for start in range(0, layout["n_jets"], self.rows_per_task)]  # fmt: skip

    def describe(self, n_tasks: int) -> str:
        jets = sum(layout["n_jets"] for layout in self.layouts)
        return f"{len(self.layouts)} {self.name} file(s), {jets} jets, {n_tasks} tasks"

    def read(self, task: dict[str, Any], dropped: Counter) -> Iterator[pd.DataFrame]:
        layout, start, stop = task["layout"], task["start"], task["stop"]
        jets, why = self.read_rows(layout, start, stop, self.data, self.drop_bad_jets)
        dropped.update(why)
        log.info("%s rows %d-%d: %d jets kept", Path(layout["path"]).name, start, stop - 1, len(jets))
        yield jets

    def provenance(self, n_tasks: int, dropped: Counter) -> dict[str, Any]:
        return {
            "reader": self.name,
            "input": self.pattern,
            "files": [Path(layout["path"]).name for layout in self.layouts],
            "jets_read": sum(layout["n_jets"] for layout in self.layouts),
            "mass_window": list(self.data.mass_window) or None,
            "dropped": {k: int(v) for k, v in sorted(dropped.items())},
        }


def prepare(
    spark,
    input_format: str,
    pattern: str,
    output: str | Path,
    data: DataConfig,
    drop_bad_jets: bool = False,
    overwrite: bool = False,
) -> DatasetInfo:
    """Ingest the files ``pattern`` matches, in the layout ``input_format`` names (``registry.SOURCES``), inside
    executors (jets outside ``data.mass_window`` dropped) and write the dataset."""
    from ucluster_spark.registry import SOURCES, part, refuse_missing_package

    if input_format not in SOURCES:
        raise DatasetError(f"input format {input_format!r} is not one of {list(SOURCES)}")
    refuse_missing_package(SOURCES, input_format, "--format")
    source = part(SOURCES, input_format, "driver").open(pattern, data, drop_bad_jets)
    return build_dataset(spark, source, output, data, overwrite)


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
