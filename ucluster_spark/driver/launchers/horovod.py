"""Driver side: the Horovod launcher (``run.launcher: horovod``, the default): ``horovod.spark.run`` starts one
process per rank inside Spark tasks; Gloo is the controller (NCCL moves GPU tensors)."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from ucluster_spark import _env, store
from ucluster_spark.config import Config
from ucluster_spark.driver.launchers.supervision import FailureWatchdog, restored_signal_handlers
from ucluster_spark.errors import TrainingFailed, safe_text
from ucluster_spark.executor.rank.entry import train_fn
from ucluster_spark.plan import TrainingPlan


def rank_environment(cfg: Config) -> dict[str, str]:
    """The driver's environment for the rank processes, with or without the malloc thresholds
    (``run.malloc_thresholds``; they act only when a process starts)."""
    return _env.with_changes(dict(os.environ), _env.malloc_env(cfg.run.malloc_thresholds), keep_set=True)


def describe(cfg: Config) -> str:
    return "horovod, gloo"


def launch(spark, cfg: Config, plan: TrainingPlan) -> list[dict[str, Any]]:
    import horovod.spark

    # A failed rank's peers may wait in a collective forever: SIGTERM to this process is horovod's own abort path
    # (its launcher terminates every rank's command and the Spark job is cancelled).
    watchdog = FailureWatchdog(store.RunLayout(plan.run_dir).failures, cfg.run.failure_grace_seconds)

    try:
        with restored_signal_handlers(), watchdog:
            return horovod.spark.run(
                train_fn,
                args=(cfg.to_dict(), asdict(plan)),
                num_proc=cfg.run.num_proc,
                use_gloo=True,
                use_mpi=False,
                start_timeout=cfg.run.start_timeout,
                verbose=cfg.run.verbose,
                env=rank_environment(cfg),
                # stdout/stderr unset: the ranks' own output stays in their executors' stdout/stderr (the console
                # in local mode), as with the barrier launcher; progress reaches the driver through train.log.
                # Captured, it would travel through horovod's task service, which closes its pipes on abort while
                # a rank may still be writing: a Ctrl-C then printed that executor thread's traceback too.
            )
    except Exception as err:  # horovod raises plain Exception/RuntimeError for failed ranks
        details = watchdog.summary()
        raise TrainingFailed(f"training failed: {safe_text(err)}" + (f"\n{details}" if details else "")) from err
