"""Both sides: choosing the final model without labels. A stop rule reads the label-free measurements of the
validation points (``history[*].validations``): the share of jets that changed cluster between consecutive
points, or the clustering loss. The training loop applies it as it goes (``train.stop_rule``); the accuracy
benchmark applies it to a finished history to compare the point it chooses with the best one (which needs labels).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

RULE_MEASURES = {"assignments": "assignment_change", "loss": "clustering_loss_per_jet"}


def validation_points(history: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every validation point of a run's history, in order (each epoch's ``validations``)."""
    return [point for record in history for point in record.get("validations", [])]


def settled(points: Sequence[dict[str, Any]], rule: str, tolerance: float, patience: int, min_steps: int = 0) -> bool:
    """Whether the last ``patience`` points all count as settled under ``rule``, counting only points from
    ``min_steps`` clustering steps on. ``assignments``: fewer than ``tolerance`` of the validation jets changed
    cluster since the point before. ``loss``: the clustering loss per jet fell by less than ``tolerance`` of its
    previous value (or rose). ``never`` never settles."""
    if rule == "never":
        return False
    measure = RULE_MEASURES[rule]
    eligible = [i for i, p in enumerate(points) if p["clustering_step"] >= min_steps]
    if len(eligible) < patience:
        return False
    for i in eligible[-patience:]:
        value = points[i].get(measure)
        if value is None:
            return False
        if rule == "assignments" and not value < tolerance:
            return False
        if rule == "loss":
            previous = points[i - 1].get(measure) if i > 0 else None
            if previous is None or not previous - value < tolerance * abs(previous):
                return False
    return True


def chosen_point(
    points: Sequence[dict[str, Any]], rule: str, tolerance: float, patience: int, min_steps: int = 0
) -> int | None:
    """Index of the first point at which ``rule`` would have stopped training (None: it never would have)."""
    for end in range(1, len(points) + 1):
        if settled(points[:end], rule, tolerance, patience, min_steps):
            return end - 1
    return None
