"""Executor side: when a rank's training has diverged, and the one error every rank raises for it (the loop decides
where to check; the driver adds the last good checkpoint)."""

from __future__ import annotations

import math

from ucluster_spark.errors import TrainingDiverged

EXPLODED = 100.0
"""An epoch whose mean focal loss is this many times the first step's has diverged: the auxiliary mass
classifier starts near ln(mass bins) and a sane run only lowers it (a learning rate of 1e4 for 1e-4 takes it from
~3 to ~1e9 in one step)."""

NEAR_CEILING = 0.75
"""With ``loss.focal_epsilon`` > 0 (as run) the focal loss cannot exceed -ln(epsilon) (20.7 at 1e-9), so it never
reaches ``EXPLODED`` times a first step of ~3: an epoch mean above this fraction of that ceiling (and above the first
step's) has diverged instead — the head gives the true mass bin a probability near epsilon for most jets. The
original's own model on jets it was not trained on stays below 0.6 of it."""


def focal_explosion(focal: float, initial: float, epsilon: float) -> str:
    """Why an epoch's mean focal loss says training diverged, or "" when it does not."""
    if not initial:
        return ""
    if focal > EXPLODED * initial:
        return (f"the focal loss exploded: its epoch mean {focal:.4g} is {focal / initial:.3g} times the first step's "
                f"{initial:.4g}")  # fmt: skip
    ceiling = -math.log(epsilon) if epsilon else math.inf
    if focal > NEAR_CEILING * ceiling and focal > initial:
        return (f"the focal loss exploded: its epoch mean {focal:.4g} is at its ceiling -ln(loss.focal_epsilon) = "
                f"{ceiling:.3g} ({focal / initial:.3g} times the first step's {initial:.4g})")  # fmt: skip
    return ""


def divergence(cfg, ranks: int, epoch: int, global_step: int, problem: str) -> TrainingDiverged:
    """The error every rank raises at the same step when training has diverged, naming where, what and the setting
    most likely at fault (the driver adds the last good checkpoint)."""
    t, lc = cfg.train, cfg.loss
    lr = t.learning_rate * (ranks if t.scale_lr_by_workers else 1)
    if lr > 0.01:
        likely = f"train.learning_rate={t.learning_rate:g} is far above the usual 1e-4 to 1e-3"
    elif epoch >= t.pretrain_epochs:
        likely = (f"the clustering loss: lower loss.clustering_weight={lc.clustering_weight:g} or "
                  f"loss.alpha_step={lc.alpha_step:g}, or train.learning_rate={t.learning_rate:g}")  # fmt: skip
    else:
        likely = f"train.learning_rate={t.learning_rate:g}, or non-finite values in the training data"
    return TrainingDiverged(f"training diverged in epoch {epoch + 1}, at step {global_step}: {problem}; likely "
                            f"cause: {likely}")  # fmt: skip


def losses_text(means) -> str:
    return ", ".join(f"{k} {float(v):.4g}" for k, v in zip(("loss", "focal", "clustering per jet"), means, strict=True))
