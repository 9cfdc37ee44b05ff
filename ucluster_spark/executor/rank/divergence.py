"""Executor side: when a rank's training has diverged, and the one error every rank raises for it (the loop decides
where to check; the driver adds the last good checkpoint)."""

from __future__ import annotations

from ucluster_spark.errors import TrainingDiverged

EXPLODED = 100.0
"""An epoch whose mean focal loss is this many times the first step's has diverged: the auxiliary mass
classifier starts near ln(mass bins) and a sane run only lowers it (a learning rate of 1e4 for 1e-4 takes it from
~3 to ~1e9 in one step)."""


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
