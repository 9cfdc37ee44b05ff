"""Driver side: resolve the data, stage the run directory, launch the ranks (``horovod.spark.run``, or the
barrier stage of ``barrier.py``).

No TensorFlow import here: the ranks import it inside ``executor.rank.entry.train_fn`` on the executors.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ucluster_spark import checkpoint, errors, store
from ucluster_spark.config import Config, ConfigError
from ucluster_spark.data.dataset import (
    DatasetError,
    DatasetInfo,
    check_files,
    check_filled,
    check_shardable,
    verify_checksums,
)
from ucluster_spark.data.sources import locate_or_generate
from ucluster_spark.driver.failures import divergence_reported, failure_hint, resume_hint
from ucluster_spark.driver.progress import echo_file
from ucluster_spark.driver.run_dir import prepare_run_dir
from ucluster_spark.driver.warm_start import check_init_from
from ucluster_spark.errors import TrainingFailed
from ucluster_spark.plan import TrainingPlan
from ucluster_spark.registry import LAUNCHERS, READERS, part, refuse_missing_package

log = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    run_dir: Path
    metrics: dict[str, Any]
    rank_results: list[dict[str, Any]]


def check_slots(spark, num_proc: int) -> None:
    """horovod.spark.run needs num_proc tasks running at once: a configuration this application cannot host is bad
    input (rerunning will not help), refused before anything is written."""
    cores = spark.sparkContext.defaultParallelism
    cores_per_task = int(spark.sparkContext.getConf().get("spark.task.cpus", "1"))
    slots = cores // cores_per_task
    if num_proc > slots:
        raise ConfigError(
            f"run.num_proc={num_proc} ranks need {num_proc} concurrent Spark task slots, but this application has "
            f"{slots} ({cores} cores / spark.task.cpus={cores_per_task}, master {spark.sparkContext.master}); "
            "lower --num-proc or give Spark more cores/executors"
        )


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


def check_stack(cfg: Config) -> None:
    """The launcher and reader asked for are installed here (the current-releases environment has neither horovod
    nor petastorm): a clear refusal before any work, not an ImportError inside a rank."""
    refuse_missing_package(LAUNCHERS, cfg.run.launcher, "run.launcher")
    refuse_missing_package(READERS, cfg.data.reader, "data.reader")


def launch_ranks(spark, cfg: Config, plan: TrainingPlan) -> list[dict[str, Any]]:
    """Every rank's summary, by the launcher ``run.launcher`` names; ``TrainingFailed`` naming what failed."""
    layout = store.RunLayout(plan.run_dir)
    shutil.rmtree(layout.placements, ignore_errors=True)  # where an earlier attempt's ranks ran
    return part(LAUNCHERS, cfg.run.launcher, "driver").launch(spark, cfg, plan)


def train(spark, cfg: Config, resume: bool = False) -> TrainingResult:
    """The whole training step: data located or generated, ranks launched. The run directory holds a checkpoint
    after every epoch and is finished when ``metrics.json`` (written last, atomically) exists."""
    check_slots(spark, cfg.run.num_proc)
    check_stack(cfg)
    check_init_from(cfg)
    run_dir = store.local_path(cfg.run.output) if cfg.run.output else store.default_run_dir()
    flag = "--resume" if resume else "--output"
    with store.exclusive_output(run_dir, "training run", flag, is_ours=lambda d: store.RunLayout(d).config.is_file()):
        return _train(spark, cfg, run_dir, resume)


def _train(spark, cfg: Config, run_dir: Path, resume: bool) -> TrainingResult:
    """``train`` while holding the run directory's lock."""
    resume_from = prepare_run_dir(run_dir, resume)
    state = checkpoint.read_state(resume_from) if resume_from else checkpoint.TrainingState(0, [])
    check_resumable(cfg, resume_from, state)
    root, info = checked_dataset(spark, cfg)
    plan = replace(
        make_plan(root, info, run_dir),
        resume_from=str(resume_from or ""),
        epochs_done=state.epochs_done,
        history=state.history,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.dump(store.RunLayout(run_dir).config)
    via = part(LAUNCHERS, cfg.run.launcher, "driver").describe(cfg)
    log.info(
        "%d rank(s) (%s) on %s%s",
        cfg.run.num_proc,
        via,
        root,
        f", resuming after epoch {state.epochs_done} from {resume_from}" if resume_from else "",
    )
    echo = echo_file(store.RunLayout(run_dir).train_log) if cfg.run.verbose else contextlib.nullcontext()
    with echo:  # rank 0's progress on the console (run.verbose=0: only in train.log)
        try:
            results = sorted(launch_ranks(spark, cfg, plan), key=lambda r: r["rank"])
        except TrainingFailed as err:
            diverged = divergence_reported(run_dir)
            if diverged:  # an outcome of the settings, fully explained: one line, no launcher noise
                raise errors.TrainingDiverged(f"{diverged}; {resume_hint(run_dir)}") from None
            raise TrainingFailed(f"{err}\n{failure_hint(err, run_dir)}") from err
    return TrainingResult(run_dir, results[0]["metrics"], results)


def check_resumable(cfg: Config, resume_from: Path | None, state: checkpoint.TrainingState) -> None:
    """A resumed run has epochs left to train; resuming with another rank count is allowed, with a warning."""
    if state.epochs_done >= cfg.train.epochs:
        raise ConfigError(
            f"{resume_from} already completed {state.epochs_done} epoch(s) and train.epochs={cfg.train.epochs}; "
            "raise train.epochs to train longer"
        )
    if resume_from and state.num_proc and state.num_proc != cfg.run.num_proc:
        log.warning(
            "resuming a %d-rank run with %d rank(s): the shards, the batches and the global batch (%d jets, was %d) "
            "differ, so the result will differ from the uninterrupted run's; resume with --num-proc %d to continue "
            "it number for number",
            state.num_proc, cfg.run.num_proc, cfg.train.batch_size * cfg.run.num_proc,
            cfg.train.batch_size * state.num_proc, state.num_proc,
        )  # fmt: skip


def checked_dataset(spark, cfg: Config) -> tuple[Path, DatasetInfo]:
    """The training data, located or generated, checked whole before any rank starts: never train on part of a
    damaged dataset, on empty splits, or on shards some rank would find empty."""
    root, info = locate_or_generate(spark, cfg.data)
    check_files(root, info)
    verify_checksums(spark, root, info)
    if info.n_jets("train") == 0 or info.n_jets("test") == 0:
        raise DatasetError(f"{root}: the train and test splits must both hold jets, got {info.counts}")
    if not info.n_jets("val") and (cfg.train.stop_rule != "never" or cfg.train.validate_every_steps):
        raise ConfigError(
            f"train.stop_rule={cfg.train.stop_rule} / train.validate_every_steps={cfg.train.validate_every_steps} "
            f"need validation jets, and {root} has none: give data.split_fractions a val share"
        )
    check_shardable(root, cfg.run.num_proc, ("train", "test") + (("val",) if info.n_jets("val") else ()))
    check_filled(root, "train", cfg.data.aux_mass_columns)
    return root, info
