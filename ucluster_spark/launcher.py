"""Driver side: resolve the data, stage the run directory, launch the ranks with ``horovod.spark.run``.

No TensorFlow import here: the ranks import it inside ``train.train_fn`` on the executors.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ucluster_spark import store
from ucluster_spark.config import Config
from ucluster_spark.data.dataset import DatasetError, DatasetInfo, check_filled, check_shardable
from ucluster_spark.data.sources import locate_or_generate
from ucluster_spark.train import ProgressLog, TrainingPlan, train_fn


class LaunchError(RuntimeError):
    """The Spark application cannot host the requested ranks, or the ranks failed."""


@dataclass
class TrainingResult:
    run_dir: Path
    metrics: dict[str, Any]
    rank_results: list[dict[str, Any]]


def check_slots(spark, num_proc: int) -> None:
    """horovod.spark.run needs num_proc tasks running at once; fail now rather than wait for the timeout."""
    slots = spark.sparkContext.defaultParallelism
    if num_proc > slots:
        raise LaunchError(
            f"run.num_proc={num_proc} ranks need {num_proc} concurrent Spark task slots, but this application has "
            f"{slots} (master {spark.sparkContext.master}); lower --num-proc or give Spark more cores/executors"
        )


@contextlib.contextmanager
def echo_file(path: Path, out=None, interval: float = 0.5) -> Iterator[None]:
    """Copy lines appended to ``path`` (rank 0's progress) to ``out`` (default: the current stderr) while the
    block runs, then the rest."""
    out = out or sys.stderr
    stop = threading.Event()

    def follow() -> None:
        position = 0
        while True:
            finished = stop.wait(interval)
            if path.exists():
                with open(path) as handle:
                    handle.seek(position)
                    chunk = handle.read()
                    position = handle.tell()
                if chunk:
                    out.write(chunk)
                    out.flush()
            if finished:
                return

    thread = threading.Thread(target=follow, name="progress-echo", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def make_plan(root: Path, info: DatasetInfo, run_dir: Path) -> TrainingPlan:
    return TrainingPlan(
        train_url=info.split_url(root, "train"),
        val_url=info.split_url(root, "val"),
        test_url=info.split_url(root, "test"),
        n_train=info.n_jets("train"),
        n_val=info.n_jets("val"),
        n_test=info.n_jets("test"),
        classes=list(info.classes),
        run_dir=str(run_dir),
    )


def run_horovod(spark, cfg: Config, plan: TrainingPlan) -> list[dict[str, Any]]:
    import horovod.spark

    check_slots(spark, cfg.run.num_proc)
    try:
        return horovod.spark.run(
            train_fn,
            args=(cfg.to_dict(), asdict(plan)),
            num_proc=cfg.run.num_proc,
            use_gloo=cfg.run.use_gloo,
            use_mpi=not cfg.run.use_gloo,
            start_timeout=cfg.run.start_timeout,
            verbose=cfg.run.verbose,
            env=dict(os.environ),
            stdout=sys.stdout,
            stderr=sys.stderr,
        )
    except Exception as err:  # horovod raises plain Exception/RuntimeError for failed ranks
        raise LaunchError(f"training failed: {err}") from err


def train(spark, cfg: Config) -> TrainingResult:
    """The whole training step: data located or generated, ranks launched, run directory moved into place."""
    final = store.local_path(cfg.run.output) if cfg.run.output else store.default_run_dir()
    if store.RunLayout(final).metrics.exists():
        raise FileExistsError(f"{final} already holds a finished run; choose another --output")
    root, info = locate_or_generate(spark, cfg.data)
    if info.n_jets("train") == 0 or info.n_jets("test") == 0:
        raise DatasetError(f"{root}: the train and test splits must both hold jets, got {info.counts}")
    check_shardable(root, cfg.run.num_proc, ("train", "test") + (("val",) if info.n_jets("val") else ()))
    check_filled(root, "train", cfg.data.aux_mass_columns)
    with store.atomic_directory(final, overwrite=final.exists()) as staging:
        plan = make_plan(root, info, staging)
        cfg.dump(staging / "config.yaml")
        print(
            f"[launch] {cfg.run.num_proc} Horovod rank(s) (gloo={cfg.run.use_gloo}) on {root}",
            file=sys.stderr,
            flush=True,
        )
        with echo_file(staging / ProgressLog.FILE_NAME):
            results = sorted(run_horovod(spark, cfg, plan), key=lambda r: r["rank"])
    return TrainingResult(final, results[0]["metrics"], results)
