"""An option, not the original: a prior that keeps every cluster populated, log K minus the entropy of the batch's
mean soft assignment (weight ``loss.balance_weight``, 0 = off; on in the clustering phase)."""

from __future__ import annotations

import tensorflow as tf

from ucluster_spark.executor.losses import cluster_balance_penalty
from ucluster_spark.executor.terms import StepView


def balance(view: StepView) -> tf.Tensor:
    return cluster_balance_penalty(view.outputs["distances"], view.alpha)
