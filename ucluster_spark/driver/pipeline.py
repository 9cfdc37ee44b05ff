"""Driver side: the scheduled step, data -> train -> evaluate, safe to rerun with the same run id.

Everything of one run id lives in ``<pipeline.root>/<run id>/`` (names: ``store.PipelineLayout``)::

    config.yaml     the configuration of the first attempt (a rerun with another one is refused)
    manifest.json   every stage and output with its status, rewritten atomically after each change
    data/           the generated or prepared dataset (absent when data.path names an existing one)
    train/          the training run directory (checkpoints while running; metrics.json when finished)
    evaluate/       assignments/, metrics.json, plots/ of the evaluation

Each output is complete or absent (every stage writes atomically), so a rerun skips what exists, resumes training
from its last checkpoint, and redoes only what is missing. One attempt at a time per run id (``store.exclusive_output``:
a second one exits 75 naming the first).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ucluster_spark import checkpoint, store
from ucluster_spark.config import Config, ConfigError
from ucluster_spark.driver import tracking
from ucluster_spark.errors import EXIT_OK, BadInput, DataFailed, exit_code_for, interrupt_exit_code

log = logging.getLogger(__name__)

STAGES = ("data", "train", "evaluate")
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
IGNORED_FOR_RERUN = {
    ("pipeline", "root"),
    ("run", "verbose"),
    ("run", "start_timeout"),
    ("run", "spark_conf"),
    ("run", "collective_timeout_seconds"),
    ("run", "rank_memory_limit_mb"),  # raised after a rank failed on it, the rerun continues the same run
}
"""Settings a rerun may change: they do not change what is computed."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _flat(cfg_dict: dict[str, Any]) -> dict[tuple[str, str], Any]:
    return {(section, key): value for section, values in cfg_dict.items() for key, value in values.items()}


def check_same_config(stored: dict[str, Any], cfg: Config, run_dir: Path) -> None:
    """A run id stands for one configuration: refuse a rerun that would compute something else."""
    old, new = _flat(stored), _flat(cfg.to_dict())
    changed = sorted(f"{s}.{k}" for s, k in old.keys() | new.keys() if (s, k) not in IGNORED_FOR_RERUN
                     and old.get((s, k)) != new.get((s, k)))  # fmt: skip
    if changed:
        raise ConfigError(
            f"{run_dir} was started with another configuration (changed: {', '.join(changed)}); "
            "use a new --run-id for a new configuration"
        )


class Manifest:
    """``manifest.json``: the state of every stage and output, for schedulers and people."""

    def __init__(self, path: Path, run_id: str):
        self.path = path
        previous = store.read_json(self.path) if self.path.exists() else {}
        earlier = previous.get("earlier_attempts", [])
        if previous:
            earlier = [*earlier, {k: previous.get(k) for k in ("started_at", "finished_at", "status", "exit_code")}]
        self.data: dict[str, Any] = {
            "run_id": run_id,
            "status": "running",
            "exit_code": None,
            "attempt": len(earlier) + 1,
            "started_at": _now(),
            "stages": {name: {"status": "pending", "outputs": []} for name in STAGES},
            "earlier_attempts": earlier,
        }
        if "mlflow_run_id" in previous:
            self.data["mlflow_run_id"] = previous["mlflow_run_id"]
        self.save()

    def save(self) -> None:
        store.atomic_write_json(self.path, self.data)

    def stage(self, name: str, **fields: Any) -> dict[str, Any]:
        self.data["stages"][name].update(fields)
        self.save()
        return self.data["stages"][name]

    def finish(self, status: str, exit_code: int) -> None:
        self.data.update(status=status, exit_code=exit_code, finished_at=_now())
        self.save()


def outputs(paths: list[tuple[str, Path]]) -> list[dict[str, str]]:
    """Each output with its status: outputs are written atomically, so one that exists is complete."""
    return [{"kind": kind, "path": str(p), "status": "complete" if p.exists() else "missing"} for kind, p in paths]


def exclusive(layout: store.PipelineLayout):
    """One attempt per run id at a time (the lock dies with its process), the staging of a killed one removed."""
    return store.exclusive_output(layout.root, "pipeline run", flag="pipeline.root/--run-id",
                                  is_ours=lambda root: (root / layout.config.name).is_file())  # fmt: skip


def data_stage(spark, cfg: Config, layout: store.PipelineLayout, manifest: Manifest) -> Path:
    """The dataset training will read: prepared from ``pipeline.input``'s files, an existing one, or generated."""
    from ucluster_spark.data.dataset import check_compatible, is_dataset, load_info
    from ucluster_spark.data.sources import generate, prepare
    from ucluster_spark.data.table import prepare_table

    p = cfg.pipeline
    if not (p.input or p.input_table) and cfg.data.path:
        root = store.local_path(cfg.data.path)
        check_compatible(load_info(root), cfg.data, str(root))
        manifest.stage("data", status="skipped", action="external dataset", outputs=outputs([("dataset", root)]))
        return root
    root = layout.data
    action = (f"prepared from table {p.input_table}" if p.input_table else
              f"prepared from {p.input_format} files" if p.input else "generated with Pythia")  # fmt: skip
    if is_dataset(root):
        check_compatible(load_info(root), cfg.data, str(root))
        manifest.stage("data", status="skipped", action=action, outputs=outputs([("dataset", root)]))
        log.info("data: %s is complete, skipped", root)
        return root
    manifest.stage("data", status="running", action=action, started_at=_now())
    started = time.time()
    try:
        if p.input_table:
            prepare_table(spark, p.input_table, root, cfg.data, p.drop_bad_jets, overwrite=root.exists())
        elif p.input:
            prepare(spark, p.input_format, p.input, root, cfg.data, p.drop_bad_jets, overwrite=root.exists())
        else:
            generate(spark, cfg.data, root, overwrite=root.exists())
    except BadInput:
        raise
    except Exception as err:
        raise DataFailed(f"data stage ({action}) failed: {err}") from err
    manifest.stage("data", status="completed", seconds=round(time.time() - started, 1),
                   outputs=outputs([("dataset", root)]))  # fmt: skip
    return root


def train_stage(spark, cfg: Config, data_root: Path, pipeline: store.PipelineLayout, manifest: Manifest) -> Path:
    """Train (or resume, or skip) into the pipeline's ``train/``."""
    from ucluster_spark.driver.launcher import train

    layout = pipeline.train
    train_dir = layout.root
    listed = [("run directory", train_dir), ("model", layout.model_dir), ("metrics", layout.metrics),
              ("plots", layout.plots)]  # fmt: skip
    if layout.metrics.exists():
        warnings = store.read_json(layout.metrics).get("warnings", [])
        manifest.stage("train", status="skipped", outputs=outputs(listed), warnings=warnings)
        log.info("train: %s is finished, skipped", train_dir)
        return train_dir
    resume = train_dir.exists() and checkpoint.latest(train_dir) is not None
    manifest.stage("train", status="running", resumed=resume, started_at=_now())
    started = time.time()
    overrides = {"data": {"path": str(data_root)}, "run": {"output": str(train_dir)}}
    train_cfg = Config.from_dict(_merge(cfg.to_dict(), overrides))
    result = train(spark, train_cfg, resume=resume)
    manifest.stage("train", status="completed", seconds=round(time.time() - started, 1), outputs=outputs(listed),
                   warnings=result.metrics.get("warnings", []))  # fmt: skip
    return train_dir


def evaluate_stage(
    spark, cfg: Config, data_root: Path, train_dir: Path, pipeline: store.PipelineLayout, manifest: Manifest
) -> Path:
    from ucluster_spark.driver.evaluate import ensure_table, evaluate

    layout = pipeline.evaluate
    out = layout.root
    listed = [("assignments", layout.assignments), ("metrics", layout.metrics), ("plots", layout.plots)]
    settings = dataclasses.replace(cfg.evaluate, run_id=cfg.evaluate.run_id or pipeline.root.name)
    if layout.is_complete():
        warnings = store.read_json(layout.metrics).get("warnings", [])
        held = {"table": ensure_table(spark, train_dir, out, settings)} if settings.table else {}
        manifest.stage("evaluate", status="skipped", outputs=outputs(listed), warnings=warnings, **held)
        log.info("evaluate: %s is complete, skipped", out)
        return out
    manifest.stage("evaluate", status="running", started_at=_now())
    started = time.time()
    result = evaluate(spark, train_dir, data_root, out, settings)
    table = {"table": result["table"]} if "table" in result else {}
    manifest.stage("evaluate", status="completed", seconds=round(time.time() - started, 1), outputs=outputs(listed),
                   warnings=result["warnings"], **table)  # fmt: skip
    return out


def _merge(base: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {section: {**values, **overrides.get(section, {})} for section, values in base.items()}


def run_pipeline(spark, cfg: Config, run_id: str) -> dict[str, Any]:
    """Run (or finish) pipeline ``run_id``; returns the manifest. Raises what the failing stage raised, after
    recording it in the manifest."""
    if not RUN_ID_PATTERN.match(run_id):
        raise ConfigError(f"--run-id {run_id!r}: use letters, digits, '.', '_' and '-' (at most 128, not leading)")
    from ucluster_spark.driver.launcher import check_slots

    check_slots(spark, cfg.run.num_proc)  # a configuration this application cannot run: refused, nothing written
    layout = store.PipelineLayout(cfg.pipeline.root, run_id)
    run_dir = layout.root
    with exclusive(layout):  # under the lock: two first attempts cannot both write their config
        if layout.config.exists():
            check_same_config(yaml.safe_load(layout.config.read_text()), cfg, run_dir)
        else:
            cfg.dump(layout.config)
        manifest = Manifest(layout.manifest, run_id)
        log.info("%s (attempt %s)", run_dir, manifest.data["attempt"])
        current = "data"
        try:
            data_root = data_stage(spark, cfg, layout, manifest)
            current = "train"
            train_dir = train_stage(spark, cfg, data_root, layout, manifest)
            current = "evaluate"
            out = evaluate_stage(spark, cfg, data_root, train_dir, layout, manifest)
        except BaseException as err:
            interrupted = interrupt_exit_code(err)
            code, status = (interrupted, "interrupted") if interrupted else (exit_code_for(err), "failed")
            manifest.stage(current, status=status, error=f"{type(err).__name__}: {err}"[-20000:],
                           traceback=traceback.format_exc()[-8000:])  # fmt: skip
            manifest.finish(status, code)
            raise
        mlflow_run = tracking.log_pipeline(run_id, manifest.data.get("mlflow_run_id"), train_dir, out)
        if mlflow_run:
            manifest.data["mlflow_run_id"] = mlflow_run
        stages = manifest.data["stages"]
        manifest.data["warnings"] = [f"{name}: {w}" for name in STAGES for w in stages[name].get("warnings", [])]
        manifest.finish("succeeded", EXIT_OK)
        log.info("succeeded: %s", layout.manifest)
        return manifest.data
