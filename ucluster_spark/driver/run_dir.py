"""Driver side: the run directory's rules before any work: resume from its last checkpoint, start clean, or refuse
(a finished run is never touched)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ucluster_spark import checkpoint, store
from ucluster_spark.errors import InputMissing, OutputExists


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
