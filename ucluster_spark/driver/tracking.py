"""Driver side: MLflow logging of finished runs, when ``mlflow`` is installed and a tracking server is configured.

Active when ``mlflow`` imports and ``MLFLOW_TRACKING_URI`` is set (or on Databricks, whose runtime sets the
tracking server itself); the experiment comes from ``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID`` as usual.
Otherwise every function here does nothing. What is logged comes from the run directories after each stage
(parameters, one point per epoch, the final metrics, the plots, the model), so the ranks never talk to the tracking
server, and a tracking failure is reported but never fails a job whose outputs are already written. The model is
logged by a child process (``jobs/export.py --mlflow``): TensorFlow stays out of the driver.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ucluster_spark import store
from ucluster_spark.config import Config, TrackingConfig
from ucluster_spark.errors import ConfigError, InputMissing

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


def _log_training(mlflow, run_dir: Path, settings: TrackingConfig | None) -> None:
    layout = store.RunLayout(run_dir)
    cfg_dict = store.read_json(layout.model_config)
    mlflow.log_params(flat_params(cfg_dict))
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
    settings = settings or Config.from_dict(cfg_dict, str(layout.model_config)).tracking
    if settings.log_model:
        try:
            _log_model(mlflow.active_run().info.run_id, run_dir, settings.register_as)
        except Exception as err:  # the rest of the run (the pipeline's evaluation) is still logged
            log.warning("MLflow: %s", err)


def _log_model(mlflow_run_id: str, run_dir: Path, register_as: str) -> None:
    """The run's MLflow model, logged into ``mlflow_run_id`` by ``jobs/export.py --mlflow`` in a child process."""
    command = [sys.executable, "-m", "ucluster_spark.jobs.export", str(run_dir), "--mlflow",
               "--mlflow-run-id", mlflow_run_id, *(["--register-as", register_as] if register_as else [])]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the model was not logged: {done.stderr.strip()[-1500:]}")
    logged = json.loads(done.stdout.strip().splitlines()[-1])["mlflow"]
    log.info("MLflow model: %s%s", logged["model_uri"],
             f" = {logged['registered_model']}" if logged["registered_model"] else "")  # fmt: skip


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


def log_training(run_dir: str | Path, settings: TrackingConfig | None = None) -> str | None:
    """``settings`` None: the run's own ``tracking`` section."""
    run_dir = store.local_path(run_dir)
    return _logged(f"train {run_dir.name}", lambda m: _log_training(m, run_dir, settings))


def log_evaluation(out_dir: str | Path) -> str | None:
    out_dir = store.local_path(out_dir)
    return _logged(f"evaluate {out_dir.name}", lambda m: _log_evaluation(m, out_dir))


def log_pipeline(
    run_id: str, logged_as: str | None, train_dir: Path, out_dir: Path, settings: TrackingConfig | None = None
) -> str | None:
    """One MLflow run per pipeline run id, logged once, when the whole pipeline has succeeded."""
    if logged_as:
        return logged_as
    return _logged(
        f"pipeline {run_id}",
        lambda m: _log_training(m, train_dir, settings),
        lambda m: _log_evaluation(m, out_dir),
        lambda m: m.set_tag("ucluster.pipeline_run_id", run_id),
    )


def is_model_uri(model: str | Path) -> bool:
    """An MLflow model URI (``models:/NAME/VERSION``, ``runs:/ID/model``, ...) rather than a run directory."""
    text = str(model)
    return ":/" in text and not text.startswith(("file:", "/", "dbfs:", "s3", "gs:", "abfss:", "hdfs:"))


@contextlib.contextmanager
def downloaded_model(uri: str) -> Iterator[Path]:
    """The run directory inside an MLflow model logged by this package, downloaded to a local temporary folder
    (removed afterwards)."""
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(f"--model {uri} needs the mlflow package (pip install -e '.[tracking]')")
    import mlflow

    folder = Path(tempfile.mkdtemp(prefix="ucluster-model-"))
    try:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder)))
        except Exception as err:  # MLflow's own message says which part of the URI was not found
            raise InputMissing(f"--model {uri}: cannot fetch it from MLflow: {err}") from None
        inside = local / "artifacts" / "run"
        if not store.RunLayout(inside).weights.is_file():
            raise InputMissing(f"--model {uri}: not a model logged by ucluster-spark (no artifacts/run/ inside)")
        run_dir = folder / f"run-{folder.name}"  # a name of its own: Spark ships it to executors by name
        inside.rename(run_dir)
        yield run_dir
    finally:
        shutil.rmtree(folder, ignore_errors=True)
