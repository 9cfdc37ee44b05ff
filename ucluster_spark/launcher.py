"""Driver side: resolve the data, stage the run directory, launch the ranks with ``horovod.spark.run``.

No TensorFlow import here: the ranks import it inside ``train.train_fn`` on the executors.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ucluster_spark import checkpoint, store
from ucluster_spark.config import Config, ConfigError
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

    start = path.stat().st_size if path.exists() else 0  # a resumed run appends to its log

    def follow() -> None:
        position = start
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


def prepare_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """Decide what happens to the run directory before any work: the checkpoint to resume from, or a clean start.
    A finished run (metrics.json present) is never touched."""
    layout = store.RunLayout(run_dir)
    if layout.metrics.exists():
        raise FileExistsError(f"{run_dir} already holds a finished run; choose another --output")
    last = checkpoint.latest(run_dir) if run_dir.exists() else None
    if resume:
        if last is None:
            raise FileNotFoundError(f"{run_dir}: no checkpoint to resume from (a run writes one after every epoch)")
        return last
    if last is not None:
        raise FileExistsError(
            f"{run_dir} holds an unfinished run (last checkpoint {last.name}); continue it with --resume {run_dir} "
            "or choose another --output"
        )
    if run_dir.exists() and any(run_dir.iterdir()):
        if not layout.config.exists():
            raise FileExistsError(f"{run_dir} exists and is not a run directory; choose another --output")
        shutil.rmtree(run_dir)  # a run that failed before its first checkpoint: nothing to keep
    return None


def failure_hint(err: Exception, run_dir: Path) -> str:
    text = str(err)
    hints = []
    if "Exit code: 137" in text:
        hints.append("exit code 137 = a rank was killed (SIGKILL: out of memory, a lost or preempted executor)")
    if "Exit code: None" in text:
        hints.append("a Spark worker running a rank was lost")
    last = checkpoint.latest(run_dir)
    hints.append(
        f"continue from checkpoint {last.name} with --resume {run_dir}" if last else "no checkpoint was written yet"
    )
    return "; ".join(hints)


def train(spark, cfg: Config, resume: bool = False) -> TrainingResult:
    """The whole training step: data located or generated, ranks launched. The run directory holds a checkpoint
    after every epoch and is finished when ``metrics.json`` (written last, atomically) exists."""
    run_dir = store.local_path(cfg.run.output) if cfg.run.output else store.default_run_dir()
    resume_from = prepare_run_dir(run_dir, resume)
    state = checkpoint.read_state(resume_from) if resume_from else checkpoint.TrainingState(0, [])
    if state.epochs_done >= cfg.train.epochs:
        raise ConfigError(
            f"{resume_from} already completed {state.epochs_done} epoch(s) and train.epochs={cfg.train.epochs}; "
            "raise train.epochs to train longer"
        )
    root, info = locate_or_generate(spark, cfg.data)
    if info.n_jets("train") == 0 or info.n_jets("test") == 0:
        raise DatasetError(f"{root}: the train and test splits must both hold jets, got {info.counts}")
    check_shardable(root, cfg.run.num_proc, ("train", "test") + (("val",) if info.n_jets("val") else ()))
    check_filled(root, "train", cfg.data.aux_mass_columns)
    plan = replace(
        make_plan(root, info, run_dir),
        resume_from=str(resume_from or ""),
        epochs_done=state.epochs_done,
        history=state.history,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.dump(store.RunLayout(run_dir).config)
    print(
        f"[launch] {cfg.run.num_proc} Horovod rank(s) (gloo={cfg.run.use_gloo}) on {root}"
        + (f", resuming after epoch {state.epochs_done} from {resume_from}" if resume_from else ""),
        file=sys.stderr,
        flush=True,
    )
    with echo_file(run_dir / ProgressLog.FILE_NAME):
        try:
            results = sorted(run_horovod(spark, cfg, plan), key=lambda r: r["rank"])
        except LaunchError as err:
            raise LaunchError(f"{err}\n{failure_hint(err, run_dir)}") from err
    return TrainingResult(run_dir, results[0]["metrics"], results)
