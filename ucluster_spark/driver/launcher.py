"""Driver side: resolve the data, stage the run directory, launch the ranks (``horovod.spark.run``, or the
barrier stage of ``barrier.py``).

No TensorFlow import here: the ranks import it inside ``executor.rank.entry.train_fn`` on the executors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ucluster_spark import _env, checkpoint, errors, store
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
from ucluster_spark.driver.warm_start import check_init_from
from ucluster_spark.errors import InputMissing, OutputExists, TrainingFailed
from ucluster_spark.plan import TrainingPlan
from ucluster_spark.registry import LAUNCHERS, READERS, missing_package, part

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


def failure_reports(failures_dir: Path) -> list[dict[str, Any]]:
    """The ranks' failure reports (``RunLayout.failures``), earliest first; one being written is skipped."""
    found = []
    for path in sorted(failures_dir.glob("rank-*.json")):
        with contextlib.suppress(OSError, ValueError):
            found.append(json.loads(path.read_text()))
    return sorted(found, key=lambda r: r.get("at", 0))


class FailureWatchdog:
    """Driver side: once a rank has reported a failure, give the others ``grace_seconds`` to exit by themselves,
    then stop them all. horovod.spark.run waits for every rank; a frozen or unreachable one would hold the job
    forever. SIGTERM to this process is horovod's own abort path (its launcher then terminates every rank's
    command and the Spark job is cancelled)."""

    def __init__(self, failures_dir: Path, grace_seconds: float, interval: float = 1.0, abort=None):
        self.failures_dir = failures_dir
        self.grace_seconds = grace_seconds
        self.abort = abort or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        self.interval = interval
        self.stopped_ranks = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="rank-failure-watchdog", daemon=True)

    def __enter__(self) -> FailureWatchdog:
        shutil.rmtree(self.failures_dir, ignore_errors=True)  # reports of an earlier attempt (before --resume)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def reports(self) -> list[dict[str, Any]]:
        return failure_reports(self.failures_dir)

    def _watch(self) -> None:
        first_seen = None
        while not self._stop.wait(self.interval):
            reports = self.reports()
            if not reports or self.stopped_ranks:
                continue
            if first_seen is None:
                first_seen = time.monotonic()
                log.warning(
                    "rank %s failed (%s); waiting up to %g s for the other ranks to exit",
                    reports[0]["rank"],
                    reports[0]["error"][:300],
                    self.grace_seconds,
                )
            elif time.monotonic() - first_seen >= self.grace_seconds:
                self.stopped_ranks = True
                log.warning("ranks still running %g s after the first failure: stopping them", self.grace_seconds)
                self.abort()

    def summary(self) -> str:
        lines = [f"rank {r['rank']} on {r['host']} failed: {r['error'][:500]}" for r in self.reports()]
        if self.stopped_ranks:
            lines.append(
                f"the ranks still running {self.grace_seconds:g} s later were stopped by the driver: a rank stopped "
                "responding (frozen process, lost network), so its peers' collectives timed out "
                "(HOROVOD_GLOO_TIMEOUT_SECONDS)"
            )
        return "\n".join(lines)


@contextlib.contextmanager
def restored_signal_handlers() -> Iterator[None]:
    """horovod's launcher installs SIGINT/SIGTERM handlers that only set its abort event; put ours back after, or
    the driver would ignore Ctrl-C and SIGTERM for the rest of its life."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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


def rank_environment(cfg: Config) -> dict[str, str]:
    """The driver's environment for the rank processes, with or without the malloc thresholds
    (``run.malloc_thresholds``; they act only when a process starts)."""
    return _env.with_changes(dict(os.environ), _env.malloc_env(cfg.run.malloc_thresholds), keep_set=True)


def check_stack(cfg: Config) -> None:
    """The launcher and reader asked for are installed here (the current-releases environment has neither horovod
    nor petastorm): a clear refusal before any work, not an ImportError inside a rank."""
    for setting, choices, name in (
        ("run.launcher", LAUNCHERS, cfg.run.launcher),
        ("data.reader", READERS, cfg.data.reader),
    ):
        package = missing_package(choices, name)
        if package:
            raise ConfigError(
                f"{setting}={name} needs {package}, which is not installed in this environment; "
                f"use {setting}={choices[name].instead} (docs/environments.md)"
            )


def launch_ranks(spark, cfg: Config, plan: TrainingPlan) -> list[dict[str, Any]]:
    """Every rank's summary, by the launcher ``run.launcher`` names; ``TrainingFailed`` naming what failed."""
    layout = store.RunLayout(plan.run_dir)
    shutil.rmtree(layout.placements, ignore_errors=True)  # where an earlier attempt's ranks ran
    watchdog = FailureWatchdog(layout.failures, cfg.run.failure_grace_seconds)
    return part(LAUNCHERS, cfg.run.launcher, "driver").launch(spark, cfg, plan, watchdog)


def prepare_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """Decide what happens to the run directory before any work: the checkpoint to resume from, or a clean start.
    A finished run (metrics.json present) is never touched."""
    layout = store.RunLayout(run_dir)
    if layout.metrics.exists() and resume:
        raise OutputExists(
            f"--resume {run_dir}: the run is finished ({layout.metrics.name} is written), nothing to resume; "
            f"assign jets with it (jobs/evaluate.py --model {run_dir}), or train a new run from its settings "
            f"(--config {layout.config} --output NEW_DIR)"
        )
    if layout.metrics.exists():
        raise OutputExists(f"{run_dir} already holds a finished run; choose another --output")
    last = checkpoint.latest(run_dir) if run_dir.exists() else None
    if resume:
        if last is None:
            raise InputMissing(f"{run_dir}: no checkpoint to resume from (a run writes one after every epoch)")
        return last
    if last is not None:
        raise OutputExists(
            f"{run_dir} holds an unfinished run (last checkpoint {last.name}); continue it with --resume {run_dir} "
            "or choose another --output"
        )
    if run_dir.exists() and any(run_dir.iterdir()):
        if not layout.config.exists():
            raise OutputExists(f"{run_dir} exists and is not a run directory; choose another --output")
        shutil.rmtree(run_dir)  # a run that failed before its first checkpoint: nothing to keep
    return None


def lost_ranks(horovod_error: str, layout: store.RunLayout) -> list[str]:
    """The ranks horovod reports without an exit code (``Process name: 1 / Exit code: None``: the process vanished
    with its executor), named with the host and pid each recorded when it started."""
    named = []
    for rank in re.findall(r"Process name: (\S+)\s+Exit code: None", horovod_error):
        try:
            where = json.loads(layout.placement(rank).read_text())
            named.append(f"rank {rank} on {where['host']} (pid {where['pid']})")
        except (OSError, ValueError, KeyError):
            named.append(f"rank {rank} (it never reported where it ran)")
    return named


def divergence_reported(run_dir: Path) -> str:
    """The message of a rank that stopped because training diverged (every rank stops at the same step), or ""."""
    for report in failure_reports(store.RunLayout(run_dir).failures):
        if report.get("kind") == errors.TrainingDiverged.__name__:
            return str(report.get("details") or report.get("error", "")).strip()
    return ""


def resume_hint(run_dir: Path) -> str:
    last = checkpoint.latest(run_dir)
    if last is None:
        return "no checkpoint was written: train again with a corrected setting"
    return (
        f"the last good checkpoint is {last.name}: continue from it with a corrected setting "
        f"(--resume {run_dir} section.key=value), or train again"
    )


def failure_hint(err: Exception, run_dir: Path) -> str:
    text = str(err)
    hints = []
    for code, meaning in errors.RANK_EXIT_MEANINGS.items():
        if f"Exit code: {code}\n" in text + "\n":
            hints.append(f"exit code {code}: {meaning}")
    hints += [f"{lost} was lost: its process ended without an exit code, as when the executor, container or host "
              "running it dies" for lost in lost_ranks(text, store.RunLayout(run_dir))]  # fmt: skip
    last = checkpoint.latest(run_dir)
    hints.append(
        f"continue from checkpoint {last.name} with --resume {run_dir}" if last else "no checkpoint was written yet"
    )
    return "; ".join(hints)


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
    root, info = locate_or_generate(spark, cfg.data)
    check_files(root, info)  # before any rank starts: never train on part of a damaged dataset
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
