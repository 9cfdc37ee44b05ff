"""Driver side: the Horovod launcher (``run.launcher: horovod``, the default): ``horovod.spark.run`` starts one
process per rank inside Spark tasks; Gloo is the controller (NCCL moves GPU tensors)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ucluster_spark.config import Config
from ucluster_spark.driver.launcher import FailureWatchdog, rank_environment, restored_signal_handlers
from ucluster_spark.errors import TrainingFailed
from ucluster_spark.executor.rank.entry import train_fn
from ucluster_spark.plan import TrainingPlan


def describe(cfg: Config) -> str:
    return "horovod, gloo"


def launch(spark, cfg: Config, plan: TrainingPlan, watchdog: FailureWatchdog) -> list[dict[str, Any]]:
    import horovod.spark

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
        raise TrainingFailed(f"training failed: {err}" + (f"\n{details}" if details else "")) from err
