"""End-of-epoch checkpoints: everything needed to continue a run as if it had not stopped.

Rank 0 writes ``RUN_DIR/checkpoints/epoch-NNNN/`` (model weights with centroids and batch-norm statistics, the
optimizer's variables including its step counter, which drives the learning-rate schedule, and the epoch history)
through a staging directory, then points ``checkpoints/LATEST`` at it; both are renames, so a crash while writing
leaves the previous checkpoint in force. Older checkpoints are deleted only after the pointer has moved.

Runs inside the Horovod ranks (saving) and on the driver (finding the checkpoint to resume from).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ucluster_spark import store
from ucluster_spark.errors import TrainingFailed

log = logging.getLogger(__name__)

LATEST = "LATEST"
WEIGHTS = store.WEIGHTS_FILE
OPTIMIZER = "optimizer.npz"
STATE = "state.json"


@dataclass
class TrainingState:
    """Where training stands after ``epochs_done`` complete epochs."""

    epochs_done: int
    history: list[dict[str, Any]]
    num_proc: int | None = None
    """The ranks that trained it (None: not known)."""


def checkpoints_dir(run_dir: str | Path) -> Path:
    return store.RunLayout(run_dir).checkpoints


def save(run_dir: str | Path, model, optimizer, state: TrainingState, keep: int = 2, pinned: int = 0) -> Path:
    """Rank 0 only. Returns the checkpoint directory, complete and pointed to by LATEST. The newest ``keep`` are
    kept, and the one after ``pinned`` epochs (the end of pre-training, with the k-means centroids: where runs with
    other clustering-phase settings can start from one and the same pre-training)."""
    root = checkpoints_dir(run_dir)
    final = root / f"epoch-{state.epochs_done:04d}"
    with store.atomic_directory(final, overwrite=True) as staging:
        model.save_weights(str(staging / WEIGHTS))
        np.savez(staging / OPTIMIZER, *[v.numpy() for v in optimizer.variables])
        store.atomic_write_json(staging / STATE, asdict(state))
    store.atomic_write_text(root / LATEST, final.name + "\n")
    for old in sorted(p for p in root.glob("epoch-*") if p.is_dir())[:-keep]:
        if old.name != f"epoch-{pinned:04d}":
            shutil.rmtree(old, ignore_errors=True)
    return final


class CheckpointDamaged(TrainingFailed):
    """A run's checkpoints were damaged after training wrote them (not an input error, and nothing to resume)."""


def latest(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None. A pointer naming a checkpoint that is gone or incomplete
    (deleted or damaged by hand or by a disk) falls back to the newest complete one, with a warning."""
    pointer = checkpoints_dir(run_dir) / LATEST
    if not pointer.exists():
        return None
    named = pointer.parent / pointer.read_text().strip()
    if (named / STATE).is_file():
        return named
    complete = sorted(p for p in pointer.parent.glob("epoch-*") if (p / STATE).is_file())
    if not complete:
        raise CheckpointDamaged(
            f"{pointer} names {named.name}, which is missing or incomplete, and no complete checkpoint is left: "
            "this run cannot be resumed; train it again into a new --output"
        )
    log.warning("%s names %s, which is missing or incomplete; using %s", pointer, named.name, complete[-1].name)
    return complete[-1]


def read_state(checkpoint: str | Path) -> TrainingState:
    raw = json.loads((Path(checkpoint) / STATE).read_text())
    history = list(raw["history"])
    ranks = raw.get("num_proc") or (len(history[-1].get("peak_rss_mb", [])) if history else 0)  # one value per rank
    return TrainingState(epochs_done=int(raw["epochs_done"]), history=history, num_proc=ranks or None)


def restore(checkpoint: str | Path, model, optimizer) -> None:
    """Load weights and optimizer variables (the optimizer must already be built for the model)."""
    model.load_weights(str(Path(checkpoint) / WEIGHTS))
    with np.load(Path(checkpoint) / OPTIMIZER) as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    variables = list(optimizer.variables)
    if len(values) != len(variables):
        raise ValueError(
            f"{checkpoint}: {len(values)} optimizer variables saved, {len(variables)} expected; the model or "
            "optimizer configuration changed since the checkpoint"
        )
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)
