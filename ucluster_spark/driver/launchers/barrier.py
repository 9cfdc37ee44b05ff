"""Driver side: the barrier launcher (``run.launcher: barrier``): the ranks as one Spark barrier stage, talking
through ``tf.distribute.MultiWorkerMirroredStrategy``. Needs no Horovod, on any Spark >= 3.0 cluster manager.

Spark re-runs a failed barrier stage, which would silently restart the epochs; instead the driver cancels the
stage at its first failed task (or a rank's failure report, after the grace period) and names what failed, as the
Horovod path does, so the run can be continued with ``--resume``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from dataclasses import asdict
from functools import partial
from typing import Any

from ucluster_spark import _env, store
from ucluster_spark.config import Config
from ucluster_spark.driver.launchers.supervision import FailureWatchdog
from ucluster_spark.errors import TrainingFailed, safe_text
from ucluster_spark.executor.rank.barrier import run_rank_task
from ucluster_spark.plan import TrainingPlan

log = logging.getLogger(__name__)


def rank_process_env(cfg: Config) -> dict[str, str | None]:
    """What the ranks' processes need beyond the executor's own environment (None: unset it there)."""
    return {**_env.RUNTIME_ENV, **_env.malloc_env(cfg.run.malloc_thresholds)}


def reason(error_message: str) -> str:
    """The line that says why, from Spark's task error: the Python exception's last line (before the JVM stack),
    or Spark's own first line (ExecutorLostFailure ...)."""
    lines = [line.strip() for line in error_message.splitlines()]
    if "Traceback (most recent call last):" in error_message:
        python = lines[: next((i for i, line in enumerate(lines) if line.startswith("at ")), len(lines))]
        return next((line for line in reversed(python) if line), lines[0])
    return lines[0]


def failed_tasks(spark, job_ids: list[int]) -> list[dict[str, Any]]:
    """The failed tasks of these jobs' stages (task index = rank), with executor, host and Spark's reason, from
    the application's status store (the reasons pyspark's status tracker does not expose)."""
    tracker, found = spark.sparkContext.statusTracker(), []
    store_ = spark.sparkContext._jsc.sc().statusStore()
    for job_id in job_ids:
        job = tracker.getJobInfo(job_id)
        for stage_id in job.stageIds if job else []:
            stage = tracker.getStageInfo(stage_id)
            for attempt in range(stage.currentAttemptId + 1 if stage else 0):
                with contextlib.suppress(Exception):  # an attempt the store no longer holds
                    tasks = store_.taskList(stage_id, attempt, 10_000)
                    for i in range(tasks.size()):
                        task = tasks.apply(i)
                        if task.status() == "FAILED" and task.errorMessage().isDefined():
                            found.append({
                                "rank": task.index(), "executor": task.executorId(), "host": task.host(),
                                "attempt": attempt, "error": reason(task.errorMessage().get()),
                            })  # fmt: skip
    return found


def stage_failing(spark, job_ids: list[int]) -> bool:
    """A task of the stage failed, or Spark has started re-running it."""
    tracker = spark.sparkContext.statusTracker()
    for job_id in job_ids:
        job = tracker.getJobInfo(job_id)
        for stage_id in job.stageIds if job else []:
            stage = tracker.getStageInfo(stage_id)
            if stage and (stage.numFailedTasks > 0 or stage.currentAttemptId > 0):
                return True
    return False


def describe_failure(spark, job_ids: list[int], layout: store.RunLayout) -> str:
    """One line per rank that Spark saw fail, first attempt only: the rank, its executor and host, and why."""
    lines = []
    for task in failed_tasks(spark, job_ids):
        if task["attempt"] > 0:
            continue
        where = f"rank {task['rank']} (executor {task['executor']} on {task['host']}"
        with contextlib.suppress(OSError, ValueError, KeyError):
            where += f", pid {json.loads(layout.placement(task['rank']).read_text())['pid']}"
        lost = "ExecutorLostFailure" in task["error"]
        lines.append(f"{where}) {'was lost with its executor' if lost else 'failed'}: {task['error'][:400]}")
    return "\n".join(lines)


def describe(cfg: Config) -> str:
    return "a barrier stage, tf.distribute"


def launch(spark, cfg: Config, plan: TrainingPlan) -> list[dict[str, Any]]:
    """Run every rank as a task of one barrier stage; their summaries, or ``TrainingFailed``."""
    sc = spark.sparkContext
    group = f"ucluster-train-{uuid.uuid4().hex[:12]}"
    n = cfg.run.num_proc
    task = partial(run_rank_task, cfg.to_dict(), asdict(plan), rank_process_env(cfg))
    outcome: dict[str, Any] = {}

    def collect() -> None:
        sc.setJobGroup(group, f"ucluster training: {n} ranks (barrier stage)", interruptOnCancel=True)
        try:
            outcome["results"] = sc.parallelize(range(n), n).barrier().mapPartitions(task).collect()
        except Exception as err:  # py4j / Spark errors: the stage failed or was cancelled
            outcome["error"] = err

    thread = threading.Thread(target=collect, name="barrier-stage", daemon=True)
    watchdog = FailureWatchdog(store.RunLayout(plan.run_dir).failures, cfg.run.failure_grace_seconds,
                               abort=lambda: sc.cancelJobGroup(group))  # fmt: skip
    cancelled = False
    with watchdog:
        thread.start()
        while thread.is_alive():
            thread.join(0.5)
            if not cancelled and stage_failing(spark, sc.statusTracker().getJobIdsForGroup(group)):
                cancelled = True
                log.warning("a rank's task failed: stopping the other ranks (no automatic restart; use --resume)")
                sc.cancelJobGroup(group)
    if "results" in outcome:
        return [json.loads(text) for text in outcome["results"]]
    job_ids = sc.statusTracker().getJobIdsForGroup(group)
    details = [describe_failure(spark, job_ids, store.RunLayout(plan.run_dir)), watchdog.summary()]
    error = outcome.get("error")
    details = [d for d in details if d] or [(safe_text(error) if error else "unknown error").strip().splitlines()[0]]
    raise TrainingFailed("training failed:\n" + "\n".join(details))
