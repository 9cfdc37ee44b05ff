"""The auxiliary loss: the focal loss of a classifier of the jet's mass bin, read from z (weight
``loss.focal_weight``, on from the first step)."""

from __future__ import annotations

import tensorflow as tf

from ucluster_spark.executor.losses import focal_loss, mass_bin
from ucluster_spark.executor.terms import StepView


def focal(view: StepView) -> tf.Tensor:
    d = view.cfg.data
    masses = tf.stack([view.batch[c] for c in d.aux_mass_columns], axis=-1)  # (B, targets)
    target = mass_bin(masses, d.mass_bins, d.mass_bin_edges_max)
    return focal_loss(target, view.outputs["aux_logits"], view.cfg.loss.focal_gamma, view.cfg.loss.focal_epsilon)
