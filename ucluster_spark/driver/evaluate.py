"""Driver side: assign every jet of a dataset to a cluster with a trained run, as one Spark job, and score it.

The executors run ``inference.assign_frames`` through ``mapInPandas`` (TensorFlow is imported there only); the
driver plans, then reads small aggregates (counts per cluster and class, mass histograms, a sample of embeddings)
back from the written assignments. ``OUT_DIR`` (assignments, metrics.json, plots) is staged and renamed into
place when complete.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ucluster_spark import metrics, plots, schema, store
from ucluster_spark.accumulators import counter_accumulator
from ucluster_spark.config import Config, EvaluateConfig
from ucluster_spark.data.dataset import (
    DatasetError,
    DatasetInfo,
    check_files,
    damaged_file_from,
    input_error_from,
    load_info,
    verify_checksums,
)
from ucluster_spark.driver import tracking
from ucluster_spark.errors import EvaluationFailed, InputMissing
from ucluster_spark.plan import trained_alpha
from ucluster_spark.schema import CLUSTER, EMBEDDING

log = logging.getLogger(__name__)


@dataclass
class TrainedRun:
    """What evaluation needs from a finished training run directory."""

    run_dir: Path
    cfg: Config
    history: list[dict[str, Any]]
    centroids: np.ndarray
    dataset: Path | None
    """The dataset the run was trained on (the default to assign); None for an imported model."""
    source: str = ""
    """What the user named: the run directory, or the MLflow model URI it was downloaded from."""

    @property
    def from_mlflow(self) -> bool:
        return self.source != str(self.run_dir)

    @property
    def soft_assignment_alpha(self) -> float:
        return trained_alpha(self.history, self.cfg.loss.alpha_start)


def read_trained_run(run_dir: str | Path, source: str = "") -> TrainedRun:
    layout = store.RunLayout(run_dir)
    if not layout.metrics.is_file() or not layout.weights.is_file():
        raise InputMissing(
            f"{layout.root}: not a finished training run (needs {layout.metrics.name} and {layout.weights}); "
            "train it to the end first, or --resume it"
        )
    cfg = Config.from_dict(store.read_json(layout.model_config), str(layout.model_config))
    history = store.read_json(layout.history) if layout.history.is_file() else []
    finished = store.read_json(layout.metrics)
    centroids = np.asarray(finished["centroids"], np.float32)
    dataset = store.trained_dataset(finished)
    return TrainedRun(layout.root, cfg, history, centroids, dataset, source or str(layout.root))


def check_inputs_match(info: DatasetInfo, run: TrainedRun, data_dir: str | Path) -> None:
    """The model reads constituents as (max_constituents, features) in a fixed feature order: refuse anything
    else by name, before a single task starts."""
    d = run.cfg.data
    wanted = (d.feature_set, list(schema.feature_names(d.feature_set)), d.max_constituents)
    found = (info.feature_set, list(info.feature_names), info.max_constituents)
    if wanted != found:
        raise DatasetError(
            f"{store.local_path(data_dir)}: dataset has feature set {found[0]!r} {found[1]} with {found[2]} "
            f"constituents per jet, but the model {run.source} was trained on {wanted[0]!r} {wanted[1]} with "
            f"{wanted[2]}; prepare the dataset with the model's data settings"
        )


def read_jets(spark, root: Path, splits: list[str]):
    """The columns assignment needs from the chosen splits, one DataFrame (partitions follow the files)."""
    from pyspark.sql import functions as F

    frames = [
        spark.read.parquet(store.file_url(root / split))
        .select(schema.JET_ID, schema.LABEL, schema.MASS, schema.CONSTITUENTS)
        .withColumn(schema.SPLIT, F.lit(split))
        for split in splits
    ]
    jets = frames[0]
    for frame in frames[1:]:
        jets = jets.unionByName(frame)
    return jets


def task_threads(spark) -> int:
    """TensorFlow threads per assignment task: the cores Spark gives each task."""
    return int(spark.sparkContext.getConf().get("spark.task.cpus", "1"))


def score(counts_rows, splits: list[str], n_clusters: int, classes: list[str]) -> dict[str, Any]:
    """metrics.json's numbers from (split, cluster, label, count) rows: Hungarian accuracy, NMI, ARI over all
    the assigned jets and per split when every jet is labelled, else cluster sizes only."""
    by_split = {s: np.zeros((n_clusters, len(classes)), np.int64) for s in splits}
    sizes = {s: np.zeros(n_clusters, np.int64) for s in splits}
    unlabelled = 0
    for split, cluster, label, count in counts_rows:
        sizes[split][cluster] += count
        if label is None:
            unlabelled += count
        else:
            by_split[split][cluster, label] += count
    if unlabelled:
        result: dict[str, Any] = {
            "labelled": False,
            "unlabelled_jets": int(unlabelled),
            "n_jets": int(sum(v.sum() for v in sizes.values())),
            "cluster_sizes": [int(v) for v in sum(sizes.values())],
            "by_split": {s: {"n_jets": int(v.sum()), "cluster_sizes": v.tolist()} for s, v in sizes.items()},
        }
        return result
    total = sum(by_split.values())
    return {
        "labelled": True,
        **metrics.summarize(total, classes),
        "by_split": {s: metrics.summarize(c, classes) for s, c in by_split.items() if c.sum()},
    }


def tallies(assignments) -> list[tuple[str, int, int | None, int, int]]:
    """Jets per (split, cluster, label, mass bin) of the written assignments: all that metrics.json and the mass
    plot need, in one read of them (``plots.MASS_EDGES``' uniform bins, the last one = overflow)."""
    from pyspark.sql import functions as F

    width = float(plots.MASS_EDGES[1] - plots.MASS_EDGES[0])
    last = len(plots.MASS_EDGES) - 2
    binned = F.least(F.greatest(F.floor(F.col(schema.MASS) / width), F.lit(0)), F.lit(last)).cast("int")
    grouped = assignments.groupBy(schema.SPLIT, CLUSTER, schema.LABEL, binned.alias("bin")).count()
    return [tuple(row) for row in grouped.collect()]


def mass_histograms(tally_rows, n_clusters: int) -> np.ndarray:
    """``plots.mass_histogram`` of every assigned jet, per cluster, from ``tallies`` rows."""
    counts = np.zeros((n_clusters, len(plots.MASS_EDGES) - 1), np.int64)
    for _split, cluster, _label, mass_bin, count in tally_rows:
        counts[cluster, mass_bin] += count
    return counts


def embedding_sample(assignments, n_jets: int, total: int, seed: int):
    """About ``n_jets`` assigned jets (embedding, cluster, label) for the scatter plot."""
    fraction = min(1.0, 1.5 * n_jets / max(total, 1))
    return assignments.select(EMBEDDING, CLUSTER, schema.LABEL).sample(fraction=fraction, seed=seed).limit(n_jets)


def draw(out: Path, result: dict[str, Any], sample, histograms, run: TrainedRun, classes: list[str]) -> list[str]:
    """The evaluation's PNGs under ``out``; returns their file names."""
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    if result["labelled"]:
        mapping = {int(k): classes.index(v) for k, v in result["cluster_to_class"].items()}
        drawn.append(plots.confusion_matrix(np.asarray(result["confusion_matrix"]), classes, mapping,
                                            out / plots.FILE_NAMES["confusion"]))  # fmt: skip
    if len(sample):
        z = np.stack(sample[EMBEDDING].to_numpy())
        labels = sample[schema.LABEL].to_numpy(dtype=np.int64) if result["labelled"] else None
        drawn.append(plots.embedding(z, sample[CLUSTER].to_numpy(), labels, classes, run.centroids,
                                     out / plots.FILE_NAMES["embedding"]))  # fmt: skip
    drawn.append(plots.mass_per_cluster(histograms, out / plots.FILE_NAMES["mass"]))
    return [p.name for p in drawn]


def evaluate(
    spark,
    model: str | Path,
    data_dir: str | Path | None,
    output: str | Path,
    settings: EvaluateConfig | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Assign every jet of ``data_dir`` (default: the run's own dataset) with ``model`` (a run directory, or an MLflow
    model URI such as ``models:/NAME/VERSION``) and write ``output``: ``assignments/`` (parquet,
    ``inference.ASSIGNMENT_COLUMNS``), ``metrics.json`` and ``plots/``; then, if ``settings.table`` names one, the
    assignments to that table."""
    from ucluster_spark.data.table import check_assignments_target

    settings = settings or EvaluateConfig()
    final = store.check_output_location(output, "--output")
    if settings.table:
        check_assignments_target(spark, settings.table, settings.run_id or final.name, settings.table_mode)
    if tracking.is_model_uri(model):
        with tracking.downloaded_model(str(model)) as run_dir:
            return _evaluate(spark, read_trained_run(run_dir, str(model)), data_dir, final, settings, overwrite)
    return _evaluate(spark, read_trained_run(model), data_dir, final, settings, overwrite)


def _evaluate(
    spark, run: TrainedRun, data_dir: str | Path | None, final: Path, settings: EvaluateConfig, overwrite: bool
) -> dict[str, Any]:
    root = store.local_path(data_dir) if data_dir else run.dataset
    if root is None:
        raise InputMissing(f"{run.source} was trained elsewhere (imported) and names no dataset: give --data DATASET")
    info = load_info(root)
    check_inputs_match(info, run, root)
    splits = [s for s in settings.splits if info.n_jets(s)]
    if not splits:
        raise DatasetError(f"{root}: no jets in the split(s) {settings.splits} to assign")
    check_files(root, info, tuple(splits))  # before the job: a damaged dataset is bad input, named by its file
    verify_checksums(spark, root, info, tuple(splits))
    with store.exclusive_output(final, "cluster-assignment output"):
        store.check_replaceable(
            final, "cluster-assignment output", lambda p: store.EvaluationLayout(p).is_complete(), overwrite
        )
        result = _assign(spark, run, root, info, splits, final, settings)
        if settings.table:
            result["table"] = _write_table(spark, run, final, settings)
        return result


def ensure_table(spark, run_dir: str | Path, output: str | Path, settings: EvaluateConfig) -> dict[str, Any]:
    """A complete output's assignments in ``settings.table`` exactly once: written if the table does not hold its
    run ID yet (a rerun after the table write failed), else left as it is."""
    from ucluster_spark.data.table import table_holds

    final = store.local_path(output)
    run_id = settings.run_id or final.name
    if table_holds(spark, settings.table, run_id):
        return {"name": settings.table, "run_id": run_id, "rows": 0, "already_held": True}
    return _write_table(spark, read_trained_run(run_dir), final, settings)


def _write_table(spark, run: TrainedRun, final: Path, settings: EvaluateConfig) -> dict[str, Any]:
    """The finished output's assignments into ``settings.table``, with the run ID and the model's version."""
    import hashlib

    from ucluster_spark.data.table import write_assignments_table

    run_id = settings.run_id or final.name
    weights = store.RunLayout(run.run_dir).weights
    named = run.source if run.from_mlflow else run.run_dir.name
    model_version = f"{named}@{hashlib.sha256(weights.read_bytes()).hexdigest()[:12]}"
    table_format = settings.table_format or spark.conf.get("spark.sql.sources.default", "parquet")
    rows = write_assignments_table(spark, store.file_url(store.EvaluationLayout(final).assignments), settings.table,
                                   run_id, model_version, settings.table_mode, table_format)  # fmt: skip
    log.info("%d assignments -> table %s (run_id %s, %s, %s)", rows, settings.table, run_id, model_version,
             settings.table_mode)  # fmt: skip
    return {"name": settings.table, "run_id": run_id, "model_version": model_version, "rows": rows}


def _assign(
    spark, run: TrainedRun, root: Path, info: DatasetInfo, splits: list[str], final: Path, settings: EvaluateConfig
) -> dict[str, Any]:
    """``evaluate`` while holding the output's lock: the Spark job, the scores and plots, written atomically."""
    classes = list(info.classes)
    job = AssignmentJob(spark, run, settings.batch_size)
    n_jets = sum(info.n_jets(s) for s in splits)
    log.info("assigning %d jets of %s (%s) with %s", n_jets, root, ", ".join(splits), run.source)
    with store.atomic_directory(final, overwrite=True) as staging_root:
        staging = store.EvaluationLayout(staging_root)
        seconds = job.write(read_jets(spark, root, splits), root, store.file_url(staging.assignments))
        assignments = spark.read.parquet(store.file_url(staging.assignments))
        tally_rows = tallies(assignments)
        result = score([(s, c, label, n) for s, c, label, _bin, n in tally_rows], splits, run.cfg.model.n_clusters,
                       classes)  # fmt: skip
        if result["n_jets"] != n_jets:
            raise EvaluationFailed(f"{result['n_jets']} jets assigned but the dataset metadata lists {n_jets}")
        result.update({"model": run.source, "data": str(root), "splits": splits, "classes": classes,
                       "soft_assignment_alpha": run.soft_assignment_alpha,
                       "throughput": job.throughput(n_jets, seconds)})  # fmt: skip
        sample = embedding_sample(assignments, settings.plot_jets, n_jets, run.cfg.train.seed).toPandas()
        histograms = mass_histograms(tally_rows, run.cfg.model.n_clusters)
        result["plots"] = draw(staging.plots, result, sample, histograms, run, classes)
        result["warnings"] = metrics.collapse_warnings(result["cluster_sizes"], [])
        store.atomic_write_json(staging.metrics, result)
    log.info(summary_line(result, final))
    return result


class AssignmentJob:
    """The Spark job that assigns jets: the model shipped to the executors (a run downloaded from MLflow goes as an
    archive Spark unpacks there), ``inference.assign_frames`` in each task, counters of tasks and model loads."""

    def __init__(self, spark, run: TrainedRun, batch_size: int) -> None:
        self.spark, self.run, self.batch_size = spark, run, batch_size
        self.loads = spark.sparkContext.accumulator(0)
        self.tasks_per_process = counter_accumulator(spark)
        self.shipped = ""
        if run.from_mlflow:  # downloaded to the driver
            archive = Path(shutil.make_archive(str(run.run_dir), "zip", root_dir=run.run_dir))  # removed with it
            spark.sparkContext.addArchive(str(archive))
            self.shipped = archive.name

    def body(self):
        """The function ``mapInPandas`` ships to the executors: plain values and accumulators only."""
        run_path, shipped, alpha = str(self.run.run_dir), self.shipped, self.run.soft_assignment_alpha
        batch, threads = self.batch_size, task_threads(self.spark)
        loads, tasks_per_process = self.loads, self.tasks_per_process

        def assign(frames):
            import os

            from pyspark import SparkFiles

            from ucluster_spark.executor.inference import assign_frames  # TensorFlow: in the executors only

            tasks_per_process.add(Counter({f"{os.uname().nodename}:{os.getpid()}": 1}))
            yield from assign_frames(frames, run_dir=SparkFiles.get(shipped) if shipped else run_path, alpha=alpha,
                                     batch_size=batch, threads=threads, on_load=lambda: loads.add(1))  # fmt: skip

        return assign

    def write(self, jets, root: Path, url: str) -> float:
        """Assign ``jets`` and write the assignments to ``url``; the seconds it took. A malformed jet or an unreadable
        file is bad input named by its dataset; anything else a failed evaluation."""
        started = time.time()
        try:
            jets.mapInPandas(self.body(), schema=schema.assignment_spark_schema()).write.parquet(url)
        except Exception as err:
            bad_row = input_error_from(err)  # a malformed jet is bad input, not a failed job
            if bad_row is not None:
                raise DatasetError(f"{root}: {bad_row}") from None
            damaged = damaged_file_from(err)  # a file that cannot be read (a dataset without checksums)
            if damaged is not None:
                raise damaged from None
            raise EvaluationFailed(f"cluster assignment of {root} with {self.run.source} failed: {err}") from err
        return time.time() - started

    def throughput(self, n_jets: int, seconds: float) -> dict[str, Any]:
        cores = self.spark.sparkContext.defaultParallelism
        return {
            "assignment_seconds": round(seconds, 3),
            "jets_per_second": round(n_jets / seconds, 1),
            "cores": cores,
            "jets_per_second_per_core": round(n_jets / seconds / cores, 1),
            "tasks": sum(self.tasks_per_process.value.values()),
            "executor_processes": len(self.tasks_per_process.value),
            "model_loads": self.loads.value,
        }


def summary_line(result: dict[str, Any], output: Path) -> str:
    t = result["throughput"]
    head = f"{result['n_jets']} jets -> {output}: "
    if result["labelled"]:
        head += f"clustering accuracy {result['clustering_accuracy']:.4f} (NMI {result['nmi']:.3f}), "
    else:
        head += f"cluster sizes {result['cluster_sizes']} (no labels), "
    return head + f"{t['jets_per_second']:.0f} jets/s ({t['jets_per_second_per_core']:.0f} per core)"
