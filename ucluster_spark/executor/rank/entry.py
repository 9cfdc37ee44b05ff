"""What the launcher hands to a rank: ``train_fn`` imports the training loop (TensorFlow, Horovod) only inside the
rank, so the driver, which pickles it, never imports them."""

from __future__ import annotations

from typing import Any

from ucluster_spark.executor.rank.environment import exit_for_resource, report_failure


def train_fn(cfg_dict: dict[str, Any], plan_dict: dict[str, Any]) -> dict[str, Any]:
    """Train, initialise centroids, evaluate; rank 0 writes the run directory. Returns this rank's summary.
    A rank that raises leaves a failure report for the driver's watchdog first; one out of disk or memory ends
    with that resource's exit code."""
    try:
        from ucluster_spark.executor.rank.loop import train_rank

        return train_rank(cfg_dict, plan_dict)
    except BaseException as err:
        exit_for_resource(plan_dict["run_dir"], err)
        report_failure(plan_dict["run_dir"], err)
        raise
