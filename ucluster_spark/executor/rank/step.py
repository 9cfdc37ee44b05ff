"""Executor side: one training step of a rank and what it needs, the optimizer on its learning-rate schedule and the
batch-norm momentum schedule. The training loop (``loop.py``) and the benchmarks' bare loops run the same step."""

from __future__ import annotations

import tensorflow as tf

from ucluster_spark.executor.centroids import batch_cluster_sums, minibatch_kmeans_step
from ucluster_spark.executor.layers import share_batch_norm_momentum
from ucluster_spark.executor.losses import HalvingSchedule, batch_norm_momentum, schedule_steps
from ucluster_spark.executor.rank.collectives import LocalCollectives
from ucluster_spark.executor.terms import StepView, TermValue
from ucluster_spark.registry import LOSS_TERMS, part
from ucluster_spark.schema import CONSTITUENTS, feature_names

SHOWN = ("focal", "clustering")
"""The terms whose values every step reports (the log, ``history.json``, the divergence checks), in this order."""


def make_optimizer(cfg, model, workers: int, steps_per_epoch: int):
    """Adam on the halving schedule; the learning-rate scaling rule (``scale_lr_by_workers``) is explicit."""
    t = cfg.train
    lr0 = t.learning_rate * (workers if t.scale_lr_by_workers else 1)
    period = schedule_steps(t.lr_halve_every, t.pretrain_epochs, steps_per_epoch)
    schedule = HalvingSchedule(lr0, period, t.lr_floor)
    optimizer = tf.keras.optimizers.Adam(schedule)
    optimizer.build(model.trainable_variables)
    return schedule, optimizer


def make_batch_norm_schedule(cfg, model, steps_per_epoch: int):
    """One momentum variable shared by every batch norm of ``model`` and a function of the optimizer step that gives
    its value (the original's 0.5 rising to 0.99), assigned at the start of every step."""
    t = cfg.train
    period = schedule_steps(t.bn_momentum_halve_every, t.pretrain_epochs, steps_per_epoch)
    momentum = tf.Variable(t.bn_momentum_start, trainable=False, dtype=tf.float32, name="bn_momentum")
    share_batch_norm_momentum(model, momentum)

    def at_step(step):
        return batch_norm_momentum(step, t.bn_momentum_start, t.bn_momentum_max, period)

    return momentum, at_step


def make_train_step(model, optimizer, cfg, alpha, beta, comm=None, bn_momentum=None):
    """One optimisation step on L = sum of the ``registry.LOSS_TERMS`` terms times their weights, its gradient
    scaled by ``weight`` (``EpochPlan.gradient_weights``) and averaged over ranks by ``comm`` (None: this process
    alone): a ``tf.function`` of (batch, weight) returning ([loss, focal, clustering loss per jet, 1 if the
    averaged gradient is finite else 0], z); the flag is the same on every rank, so every rank can stop at the
    same step. ``beta`` is the clustering loss's weight now (0 in pre-training, ``loss.clustering_weight`` after):
    the terms that act only in the clustering phase are on while it is > 0. With ``bn_momentum`` = (variable,
    function of the step), the batch-norm momentum follows its schedule. The centroids move as
    ``train.centroid_update`` says, and only while the clustering loss is on. The benchmarks' bare loops run the
    same step."""
    d, update = cfg.data, cfg.train.centroid_update
    comm = comm or LocalCollectives()
    variables = model.trainable_variables
    network = [i for i, v in enumerate(variables) if v is not model.centroids]
    centroid_index = next(i for i, v in enumerate(variables) if v is model.centroids)
    n_features = len(feature_names(d.feature_set))
    signature = (
        {
            CONSTITUENTS: tf.TensorSpec([None, d.max_constituents, n_features], tf.float32),
            **{c: tf.TensorSpec([None], tf.float32) for c in d.aux_mass_columns},
        },
        tf.TensorSpec([], tf.float32),
    )
    # The shown terms always run (their values are reported); another runs only when its weight is not 0.
    terms = {name: (part(LOSS_TERMS, name, "executor"), getattr(cfg.loss, term.weight), term.clustering_only)
             for name, term in LOSS_TERMS.items() if name in SHOWN or getattr(cfg.loss, term.weight)}  # fmt: skip

    # One trace whatever the batch size (they differ by one jet between steps): every rank's step is the same
    # graph, so its collectives line up with its peers' from the first step on. No AutoGraph: nothing in the step
    # branches on a tensor's value (tf.where does), and converting the model's and the optimizer's Python took a
    # third of the trace (3.2 s instead of 4.5 s for the test model), paid by every rank of every launch.
    @tf.function(input_signature=signature, autograph=False)
    def train_step(batch, weight):
        if bn_momentum is not None:
            variable, at_step = bn_momentum
            variable.assign(at_step(optimizer.iterations))
        with tf.GradientTape() as tape:
            out = model(batch[CONSTITUENTS], training=True)
            view = StepView(batch, out, model.centroids, alpha, cfg)
            loss, shown = tf.constant(0.0), {}
            for name, (term, term_weight, clustering_only) in terms.items():
                value = term(view)
                value, shown[name] = value if isinstance(value, TermValue) else (value, value)
                if term_weight:
                    loss += term_weight * (tf.sign(beta) if clustering_only else 1.0) * value
            weighted = loss * weight
        # Collective: gradients averaged over ranks.
        grads = comm.gradients(tape, weighted, variables)
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
        if update == "adam":  # as run: the centroids are the optimizer's like every weight
            optimizer.apply_gradients(zip(grads, variables, strict=True))
        else:
            optimizer.apply_gradients([(grads[i], variables[i]) for i in network])
        if update == "sgd":
            model.centroids.assign_sub(cfg.train.centroid_learning_rate * grads[centroid_index])
        elif update == "kmeans":
            sums = batch_cluster_sums(tf.stop_gradient(out["z"]), out["distances"])
            sums = comm.sum_in_step(sums, "centroid_cluster_sums")  # Collective: the global batch's sums.
            decay = cfg.train.centroid_decay
            moved, counted = minibatch_kmeans_step(model.centroids, model.centroid_counts, sums, decay)
            on = beta > 0
            model.centroids.assign(tf.where(on, moved, model.centroids))
            model.centroid_counts.assign(tf.where(on, counted, model.centroid_counts))
        return tf.stack([loss, *(shown[name] for name in SHOWN), tf.cast(finite, tf.float32)]), out["z"]

    return train_step
