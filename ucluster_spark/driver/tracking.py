"""Driver side: MLflow logging of finished runs, when ``mlflow`` is installed and a tracking server is configured.

Active when ``mlflow`` imports and ``MLFLOW_TRACKING_URI`` is set (or on Databricks, whose runtime sets the
tracking server itself); the experiment comes from ``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID`` as usual.
Otherwise every function here does nothing. What is logged comes from the run directories after each stage
(parameters, one point per epoch, the final metrics, the plots), so the ranks never talk to the tracking server,
and a tracking failure is reported but never fails a job whose outputs are already written.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

from ucluster_spark import store

log = logging.getLogger(__name__)

EPOCH_KEYS = (
    "loss",
    "focal_loss",
    "clustering_loss_per_jet",
    "alpha",
    "beta",
    "learning_rate",
    "seconds",
    "jets_per_second",
    "val_clustering_accuracy",
    "val_nmi",
)
FINAL_KEYS = ("clustering_accuracy", "nmi", "ari", "n_jets")
POINT_KEYS = ("val_clustering_accuracy", "test_clustering_accuracy", "assignment_change", "alpha")


def enabled() -> bool:
    configured = bool(os.environ.get("MLFLOW_TRACKING_URI")) or "DATABRICKS_RUNTIME_VERSION" in os.environ
    return configured and importlib.util.find_spec("mlflow") is not None


def flat_params(cfg_dict: dict[str, Any]) -> dict[str, str]:
    """``section.key`` -> value as text (lists and dicts as JSON)."""
    return {
        f"{section}.{key}": value if isinstance(value, str) else json.dumps(value)
        for section, values in cfg_dict.items()
        for key, value in values.items()
    }


def epoch_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of one history record, the embedding spread per dimension included."""
    found = {k: float(record[k]) for k in EPOCH_KEYS if k in record}
    for dim, value in enumerate(record.get("val_embedding_std", [])):
        found[f"val_embedding_std_{dim}"] = float(value)
    return found


def point_metrics(point: dict[str, Any]) -> dict[str, float]:
    """The numbers of one validation point (``history[*].validations``), logged by optimizer step."""
    found = {f"by_step_{k}": float(point[k]) for k in POINT_KEYS if point.get(k) is not None}
    offsets = [o for o in point.get("centroid_offsets", []) if o is not None]
    if offsets:
        found["by_step_largest_centroid_offset"] = float(max(offsets))
    return found


def _log_training(mlflow, run_dir: Path) -> None:
    layout = store.RunLayout(run_dir)
    mlflow.log_params(flat_params(store.read_json(layout.model_config)))
    for record in store.read_json(layout.history):
        finished_ms = int(1000 * (record["started_at"] + record["seconds"]))
        for key, value in epoch_metrics(record).items():
            mlflow.log_metric(key, value, step=record["epoch"] + 1, timestamp=finished_ms)
        for point in record.get("validations", []):
            for key, value in point_metrics(point).items():
                mlflow.log_metric(key, value, step=point["global_step"], timestamp=finished_ms)
    final = store.read_json(layout.metrics)
    mlflow.log_metrics({f"test_{k}": float(final[k]) for k in FINAL_KEYS})
    if layout.plots.is_dir():
        mlflow.log_artifacts(str(layout.plots), "plots/train")
    mlflow.set_tag("ucluster.run_dir", str(run_dir))


def _log_evaluation(mlflow, out_dir: Path) -> None:
    layout = store.EvaluationLayout(out_dir)
    result = store.read_json(layout.metrics)
    numbers = {f"eval_{k}": float(result[k]) for k in FINAL_KEYS if k in result}
    numbers["eval_jets_per_second"] = float(result["throughput"]["jets_per_second"])
    mlflow.log_metrics(numbers)
    if layout.plots.is_dir():
        mlflow.log_artifacts(str(layout.plots), "plots/evaluate")
    mlflow.log_artifact(str(layout.metrics), "evaluate")
    mlflow.set_tag("ucluster.evaluation_dir", str(out_dir))


def _logged(name: str, *parts) -> str | None:
    """Run ``parts`` (functions of the mlflow module) inside one MLflow run; its id, or None if disabled/failed."""
    if not enabled():
        return None
    try:
        import mlflow

        with mlflow.start_run(run_name=name) as active:
            for part in parts:
                part(mlflow)
            return active.info.run_id
    except Exception as err:  # the outputs exist already; tracking must not turn success into failure
        log.warning("MLflow logging of %s failed, outputs are unaffected: %s", name, err)
        return None


def log_training(run_dir: str | Path) -> str | None:
    run_dir = store.local_path(run_dir)
    return _logged(f"train {run_dir.name}", lambda m: _log_training(m, run_dir))


def log_evaluation(out_dir: str | Path) -> str | None:
    out_dir = store.local_path(out_dir)
    return _logged(f"evaluate {out_dir.name}", lambda m: _log_evaluation(m, out_dir))


def log_pipeline(run_id: str, logged_as: str | None, train_dir: Path, out_dir: Path) -> str | None:
    """One MLflow run per pipeline run id, logged once, when the whole pipeline has succeeded."""
    if logged_as:
        return logged_as
    return _logged(
        f"pipeline {run_id}",
        lambda m: _log_training(m, train_dir),
        lambda m: _log_evaluation(m, out_dir),
        lambda m: m.set_tag("ucluster.pipeline_run_id", run_id),
    )
