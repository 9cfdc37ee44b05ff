"""Executor side: the clustering phase's validation points, measured in step with every rank, and the stop rule
read from them (``train.validate_every_steps``, ``train.stop_rule``; docs/clustering.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ucluster_spark import logs
from ucluster_spark.executor.rank.collectives import Collectives
from ucluster_spark.executor.rank.environment import ProgressLog
from ucluster_spark.executor.rank.evaluation import evaluate_split
from ucluster_spark.plan import TrainingPlan, epoch_eval_fraction
from ucluster_spark.selection import settled, validation_points


def sync_non_trainable(model, comm: Collectives) -> None:
    """Average batch-norm moving statistics over ranks: each rank updated them with its own batches only,
    and inference (k-means input, evaluation, the saved model) must be the same function on every rank."""
    for i, variable in enumerate(model.non_trainable_variables):
        if variable.dtype.is_integer:  # step counters (StepSeededDropout): already equal on every rank
            continue
        # Collective: one averaged copy everywhere.
        variable.assign(comm.mean(variable.numpy(), f"non_trainable_{i}"))


@dataclass
class ValidationTrack:
    """Every validation point so far and what the next one compares with: this rank's cluster of each validation
    jet at the last point, and its clustering loss per jet of every step since then."""

    cfg: Any
    plan: TrainingPlan
    comm: Collectives
    log: ProgressLog
    points: list[dict[str, Any]] = field(default_factory=list)
    assignments: np.ndarray | None = None
    interval_loss: list[float] = field(default_factory=list)

    def resume(self, model, history: list[dict[str, Any]]) -> None:
        """Continue the points of a checkpoint's history. The checkpoint is the model at its last point, so that
        point's assignments are measured again: the next ``assignment_change`` is what it would have been."""
        self.points = validation_points(history)
        if self.points:
            self.assignments = self._measure(model, self.plan.val_url, self.plan.n_val, keep=True)["assignments"]

    def measure(self, model, global_step: int, clustering_steps: int, clustering_jets: float, alpha: float) -> dict:
        """One point now (batch-norm statistics first averaged over ranks): the label-free quantities the stop rule
        reads and the diagnostics (accuracy, centroid-to-jets distances; the test split with
        ``train.validate_test``). Appended to ``points``; logged as one line."""
        sync_non_trainable(model, self.comm)
        val = self._measure(model, self.plan.val_url, self.plan.n_val, keep=True)
        assignments = val.pop("assignments")
        changed = None
        if self.assignments is not None:
            same_jets = len(self.assignments) == len(assignments)
            differ = np.count_nonzero(self.assignments != assignments) if same_jets else len(assignments)
            # Collective: jets that changed cluster, and jets, over all ranks.
            differ, jets = self.comm.sum(np.array([differ, len(assignments)], np.int64), "assignment_change")
            changed = float(differ / max(jets, 1))
        self.assignments = assignments
        # Collective: the training clustering loss since the last point, over ranks (none right after k-means).
        mean = np.mean(self.interval_loss) if self.interval_loss else np.nan
        interval = self.comm.mean(np.array([mean]), "interval_loss")[0]
        self.interval_loss = []
        point = {
            "global_step": global_step,
            "clustering_step": clustering_steps,
            "clustering_jets": int(clustering_jets),
            "alpha": alpha,
            "clustering_loss_per_jet": None if np.isnan(interval) else float(interval),
            "assignment_change": changed,
            **{f"val_{k}": val[k] for k in ("clustering_accuracy", "nmi", "cluster_sizes", "embedding_std")},
            "centroid_offsets": val["centroid_offsets"],
            "cluster_radii": val["cluster_radii"],
            "centroids": model.centroids.numpy().round(6).tolist(),
        }
        if self.cfg.train.validate_test and self.plan.n_test:
            test = self._measure(model, self.plan.test_url, self.plan.n_test)
            point.update({"test_clustering_accuracy": test["clustering_accuracy"], "test_nmi": test["nmi"]})
        self.points.append(point)
        self.log(logs.validation_point_line(point))
        return point

    def stop_reason(self) -> str:
        """Why training ends at the last point under ``train.stop_rule`` ("" while it goes on). Every rank reads the
        same points, so every rank takes the same decision."""
        t = self.cfg.train
        if not settled(self.points, t.stop_rule, t.stop_tolerance, t.stop_patience, t.stop_min_clustering_steps):
            return ""
        what = "of the validation jets changed cluster" if t.stop_rule == "assignments" else "clustering loss change"
        return (
            f"train.stop_rule={t.stop_rule}: under {t.stop_tolerance:g} {what} at {t.stop_patience} validation "
            f"point(s) in a row (clustering step {self.points[-1]['clustering_step']})"
        )

    def _measure(self, model, url: str, n_jets: int, keep: bool = False) -> dict[str, Any]:
        fraction = epoch_eval_fraction(self.cfg.train.epoch_eval_max_jets, n_jets)
        return evaluate_split(model, url, self.cfg, self.plan.classes, self.comm, sample_fraction=fraction,
                              keep_assignments=keep)  # fmt: skip
