"""UCluster's clustering loss: each jet's squared distances to the centroids weighed by its soft assignment (weight
``loss.clustering_weight``, on in the clustering phase). Shown per jet whatever ``loss.clustering_reduction``."""

from __future__ import annotations

import tensorflow as tf

from ucluster_spark.executor.losses import (
    balanced_clustering_loss_per_jet,
    clustering_loss_per_jet,
    reduce_clustering_loss,
)
from ucluster_spark.executor.terms import StepView, TermValue


def clustering(view: StepView) -> TermValue:
    lc, z = view.cfg.loss, view.outputs["z"]
    if lc.assignment == "sinkhorn":
        per_jet = balanced_clustering_loss_per_jet(z, view.centroids, view.alpha, lc.sinkhorn_iterations)
    else:
        per_jet = clustering_loss_per_jet(z, view.centroids, view.alpha)
    return TermValue(reduce_clustering_loss(per_jet, lc.clustering_reduction), tf.reduce_mean(per_jet))
