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


def focal_loss(labels: tf.Tensor, logits: tf.Tensor, gamma: float) -> tf.Tensor:
    """Mean over the batch (and any further target axes) of -(1 - p_y)^gamma log p_y (Lin et al. 2017), the
    auxiliary loss of UCluster. ``labels`` has the shape of ``logits`` without its last axis."""
    log_p = tf.nn.log_softmax(logits, axis=-1)
    labels = tf.cast(labels, tf.int32)
    log_p_true = tf.gather(log_p, labels, axis=-1, batch_dims=len(labels.shape))
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


def reduce_clustering_loss(per_jet: tf.Tensor, reduction: str) -> tf.Tensor:
    """``sum`` reproduces the original weighting (per-jet vector loss, gradients summed over the batch)."""
    if reduction == "sum":
        return tf.reduce_sum(per_jet)
    if reduction == "mean":
        return tf.reduce_mean(per_jet)
    raise ValueError(f"unknown clustering reduction {reduction!r}; expected 'sum' or 'mean'")


def alpha_for_epoch(epoch: int, pretrain_epochs: int, alpha0: float) -> float:
    """alpha = alpha0 * (epoch - pretrain + 1) with 0-based epochs; 0 while pre-training (clustering off)."""
    if epoch < pretrain_epochs:
        return 0.0
    return float(alpha0 * (epoch - pretrain_epochs + 1))


@tf.keras.utils.register_keras_serializable(package="ucluster_spark")
class HalvingSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate halved every ``halve_every_samples`` global samples, never below ``floor``.

    Driven by the optimizer's own ``iterations`` counter, so the decay cannot silently read a step counter that
    nothing advances (the defect that froze the rate in the earlier distributed port).
    """

    def __init__(self, initial: float, samples_per_step: int, halve_every_samples: int, floor: float):
        super().__init__()
        if samples_per_step <= 0 or halve_every_samples <= 0:
            raise ValueError(
                f"samples_per_step and halve_every_samples must be > 0, "
                f"got {samples_per_step} and {halve_every_samples}"
            )
        self.initial = float(initial)
        self.samples_per_step = int(samples_per_step)
        self.halve_every_samples = int(halve_every_samples)
        self.floor = float(floor)

    def __call__(self, step):
        samples = tf.cast(step, tf.float64) * self.samples_per_step
        halvings = tf.floor(samples / self.halve_every_samples)
        rate = self.initial * tf.pow(tf.constant(0.5, tf.float64), halvings)
        return tf.cast(tf.maximum(rate, self.floor), tf.float32)

    def get_config(self):
        return {
            "initial": self.initial,
            "samples_per_step": self.samples_per_step,
            "halve_every_samples": self.halve_every_samples,
            "floor": self.floor,
        }
