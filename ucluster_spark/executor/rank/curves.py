"""Rank 0: each epoch's record as TensorBoard scalars under the run's ``tensorboard/`` folder, written as the epoch
ends, so ``tensorboard --logdir runs/`` shows the curves of running and finished runs. The step axis is the global
step (a resumed run continues it); validation points inside an epoch are placed at their own step."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

EPOCH_SCALARS = ("loss", "focal_loss", "clustering_loss_per_jet", "alpha", "learning_rate", "bn_momentum",
                 "val_clustering_accuracy", "val_nmi", "jets_per_second")  # fmt: skip
PER_CLUSTER = ("train_cluster_sizes", "val_cluster_sizes")
VALIDATION_SCALARS = ("val_clustering_accuracy", "val_nmi", "assignment_change", "clustering_loss_per_jet")


class Curves:
    """One event-file writer for this attempt of the run (a resumed run adds another file to the folder)."""

    def __init__(self, folder: Path) -> None:
        self.writer = tf.summary.create_file_writer(str(folder))

    def add_epoch(self, record: dict[str, Any]) -> None:
        with self.writer.as_default(step=int(record["global_step"])):
            for name in EPOCH_SCALARS:
                if record.get(name) is not None:
                    tf.summary.scalar(f"epoch/{name}", float(record[name]))
            for name in PER_CLUSTER:
                for cluster, size in enumerate(record.get(name) or []):
                    tf.summary.scalar(f"{name}/{cluster}", float(size))
            if spread := record.get("val_embedding_std"):  # the embedding's spread: collapse shows here first
                tf.summary.scalar("epoch/val_embedding_std_mean", sum(spread) / len(spread))
        for point in record.get("validations") or []:
            with self.writer.as_default(step=int(point["global_step"])):
                for name in VALIDATION_SCALARS:
                    if point.get(name) is not None:
                        tf.summary.scalar(f"validation/{name}", float(point[name]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_curves(folder: Path, log: Callable[[str], None]) -> Curves | None:
    """Rank 0's writer, or None (said once) where the tensorboard package, which tf.summary's scalars come from, is
    not installed (TensorFlow >= 2.20 no longer requires it): history.json still has every epoch."""
    if importlib.util.find_spec("tensorboard") is None:
        log("no TensorBoard curves: the tensorboard package is not installed (history.json has every epoch)")
        return None
    return Curves(folder)
