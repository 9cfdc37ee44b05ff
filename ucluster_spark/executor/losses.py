"""UCluster's losses and schedules as pure functions of their inputs (no hidden counters)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def mass_bin(mass: tf.Tensor, n_bins: int, edges_max: float) -> tf.Tensor:
    """Auxiliary target: index of the jet mass in ``linspace(0, edges_max, n_bins)`` edges, last bin = overflow
    (any shape in, same shape out)."""
    edges = tf.constant(np.linspace(0.0, edges_max, n_bins), dtype=tf.float32)
    mass = tf.cast(mass, tf.float32)
    index = tf.searchsorted(edges, tf.reshape(mass, [-1]), side="right") - 1
    return tf.reshape(tf.clip_by_value(index, 0, n_bins - 1), tf.shape(mass))


def focal_loss(labels: tf.Tensor, logits: tf.Tensor, gamma: float, epsilon: float = 0.0) -> tf.Tensor:
    """Mean over the batch (and any further target axes) of -(1 - p_y)^gamma log p_y (Lin et al. 2017), the
    auxiliary loss of UCluster. ``labels`` has the shape of ``logits`` without its last axis. ``epsilon`` > 0 is the
    original's form: p = softmax, then -(1 - (p_y + eps))^gamma log(p_y + eps), which caps a jet's loss at -log eps
    and stops its gradient once p_y << eps; 0 takes log p_y from log-softmax (exact however small p_y is)."""
    labels = tf.cast(labels, tf.int32)
    if epsilon:
        p_true = tf.gather(tf.nn.softmax(logits, axis=-1), labels, axis=-1, batch_dims=len(labels.shape)) + epsilon
        return tf.reduce_mean(-tf.pow(1.0 - p_true, gamma) * tf.math.log(p_true))
    log_p_true = tf.gather(tf.nn.log_softmax(logits, axis=-1), labels, axis=-1, batch_dims=len(labels.shape))
    p_true = tf.exp(log_p_true)
    return tf.reduce_mean(-tf.pow(1.0 - p_true, gamma) * log_p_true)


def squared_distances(z: tf.Tensor, centroids: tf.Tensor) -> tf.Tensor:
    """(B, D) x (K, D) -> (B, K) squared Euclidean distances."""
    return tf.reduce_sum(tf.square(z[:, None, :] - centroids[None, :, :]), axis=-1)


def soft_assignment(distances: tf.Tensor, alpha: tf.Tensor | float) -> tf.Tensor:
    """softmax_k(-alpha d_k), shifted by the per-jet minimum distance for numerical stability."""
    shifted = distances - tf.reduce_min(distances, axis=-1, keepdims=True)
    return tf.nn.softmax(-alpha * shifted, axis=-1)


def clustering_loss_per_jet(z: tf.Tensor, centroids: tf.Tensor, alpha: tf.Tensor | float) -> tf.Tensor:
    """Deep-k-means loss: sum_k ||z - mu_k||^2 softmax_k(-alpha ||z - mu_k||^2), one value per jet."""
    distances = squared_distances(z, centroids)
    return tf.reduce_sum(distances * soft_assignment(distances, alpha), axis=-1)


def balanced_assignment(distances: tf.Tensor, alpha: tf.Tensor | float, iterations: int) -> tf.Tensor:
    """The soft assignment softmax_k(-alpha d_k) rescaled by Sinkhorn-Knopp iterations (Cuturi 2013; as in SwAV,
    Caron et al. 2020) so that every cluster takes an equal share of the batch while every jet's weights still sum
    to 1: an equal-size prior on the partition, for clusters that would otherwise share one mode."""
    q = soft_assignment(distances, alpha)
    share = tf.cast(tf.shape(q)[0], q.dtype) / tf.cast(tf.shape(q)[1], q.dtype)  # jets per cluster if equal
    for _ in range(iterations):
        q = tf.math.divide_no_nan(q, tf.reduce_sum(q, axis=0, keepdims=True)) * share
        q = tf.math.divide_no_nan(q, tf.reduce_sum(q, axis=1, keepdims=True))
    return q


def balanced_clustering_loss_per_jet(
    z: tf.Tensor, centroids: tf.Tensor, alpha: tf.Tensor | float, iterations: int
) -> tf.Tensor:
    """sum_k ||z - mu_k||^2 q_k with q the batch's equal-size assignment (``balanced_assignment``), held fixed as a
    target (no gradient through it), one value per jet."""
    distances = squared_distances(z, centroids)
    target = tf.stop_gradient(balanced_assignment(distances, alpha, iterations))
    return tf.reduce_sum(distances * target, axis=-1)


def reduce_clustering_loss(per_jet: tf.Tensor, reduction: str) -> tf.Tensor:
    """``sum`` reproduces the original weighting (per-jet vector loss, gradients summed over the batch)."""
    if reduction == "sum":
        return tf.reduce_sum(per_jet)
    if reduction == "mean":
        return tf.reduce_mean(per_jet)
    raise ValueError(f"unknown clustering reduction {reduction!r}; expected 'sum' or 'mean'")


def cluster_balance_penalty(distances: tf.Tensor, alpha: tf.Tensor | float) -> tf.Tensor:
    """log K - H(mean soft assignment over the batch): 0 when the batch's jets spread evenly over the K clusters,
    log K when all sit in one. An option against emptying clusters (not part of the original recipe)."""
    share = tf.reduce_mean(soft_assignment(distances, alpha), axis=0)  # (K,)
    k = tf.cast(tf.shape(share)[0], share.dtype)
    entropy = -tf.reduce_sum(share * tf.math.log(share + 1e-12))
    return tf.math.log(k) - entropy


def alpha_for_epoch(epoch: int, pretrain_epochs: int, alpha_start: float, alpha_step: float) -> float:
    """alpha_start in the first clustering epoch, then + alpha_step per epoch (0-based epochs; the original:
    10, 15, 20, ...); 0 while pre-training (clustering off)."""
    if epoch < pretrain_epochs:
        return 0.0
    return float(alpha_start + alpha_step * (epoch - pretrain_epochs))


def alpha_for_jets(jets_seen: float, alpha_start: float, alpha_step: float, every_jets: float) -> float:
    """alpha_start, then + alpha_step after every ``every_jets`` training jets of the clustering phase: the
    original's ramp (+5 per epoch of ~306k jets) as a function of jets seen, not of what an epoch is here."""
    return float(alpha_start + alpha_step * np.floor(jets_seen / every_jets))


def halvings(step: tf.Tensor | int, halve_every_steps: float) -> tf.Tensor:
    """Completed halving periods after ``step`` optimizer steps (a staircase, as the original's decays)."""
    return tf.floor(tf.cast(step, tf.float64) / halve_every_steps)


@tf.keras.utils.register_keras_serializable(package="ucluster_spark")
class HalvingSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate halved every ``halve_every_steps`` optimizer steps, never below ``floor``.

    Driven by the optimizer's own ``iterations`` counter, so the decay cannot silently read a step counter that
    nothing advances (the defect that froze the rate in the earlier distributed port). The period comes from
    ``schedule_steps``: a fraction of pre-training, so the floor is reached at the same point of it on any
    dataset size.
    """

    def __init__(self, initial: float, halve_every_steps: float, floor: float):
        super().__init__()
        if halve_every_steps <= 0:
            raise ValueError(f"halve_every_steps must be > 0, got {halve_every_steps}")
        self.initial = float(initial)
        self.halve_every_steps = float(halve_every_steps)
        self.floor = float(floor)

    def __call__(self, step):
        rate = self.initial * tf.pow(tf.constant(0.5, tf.float64), halvings(step, self.halve_every_steps))
        return tf.cast(tf.maximum(rate, self.floor), tf.float32)

    def get_config(self):
        return {"initial": self.initial, "halve_every_steps": self.halve_every_steps, "floor": self.floor}


def batch_norm_momentum(step: tf.Tensor | int, start: float, maximum: float, halve_every_steps: float) -> tf.Tensor:
    """The original's batch-norm decay: 1 - (1 - start) / 2^n after n periods, at most ``maximum``."""
    rising = 1.0 - (1.0 - start) * tf.pow(tf.constant(0.5, tf.float64), halvings(step, halve_every_steps))
    return tf.cast(tf.minimum(rising, maximum), tf.float32)


def schedule_steps(fraction_of_pretraining: float, pretrain_epochs: int, steps_per_epoch: int) -> float:
    """A period given as a fraction of pre-training, in optimizer steps. Without pre-training the period is tiny:
    the schedules are at their floor (maximum) from the first step on."""
    return max(fraction_of_pretraining * pretrain_epochs * steps_per_epoch, 1e-9)
