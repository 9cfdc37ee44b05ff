"""Graph layers of ABCnet (Mikuni & Canelli, arXiv:2001.05311): kNN graphs over particles and attention pooling.

Shapes: B jets, N particle slots, k neighbours, F features. ``mask`` is (B, N) float, 1 for real particles and 0
for zero padding; padded particles are never chosen as neighbours while a jet has enough real ones, never weigh in
attention, batch-norm statistics or real-particle pooling, and come out as zeros (an average over all slots counts
them as zeros, which is how the original's z carries the jet's multiplicity).
"""

from __future__ import annotations

import tensorflow as tf

from ucluster_spark.config.rules import EMBEDDING_POOLINGS

PADDING_DISTANCE = 1.0e3
"""Added to the distance of every padded particle so a kNN search ranks all of them last."""
_NEG_INF = -1.0e9


def particle_mask(x: tf.Tensor) -> tf.Tensor:
    """(B, N, F) -> (B, N): 1.0 where a particle slot holds any non-zero feature (padding is exactly zero)."""
    return tf.cast(tf.reduce_any(tf.not_equal(x, 0.0), axis=-1), x.dtype)


def knn_indices(coords: tf.Tensor, mask: tf.Tensor, k: int) -> tf.Tensor:
    """(B, N, C), (B, N) -> (B, N, k) indices of each particle's k nearest particles (itself first)."""
    squared = tf.reduce_sum(tf.square(coords), axis=-1)  # (B, N)
    inner = tf.matmul(coords, coords, transpose_b=True)  # (B, N, N)
    distance = squared[:, :, None] - 2.0 * inner + squared[:, None, :]
    distance += PADDING_DISTANCE * (1.0 - mask)[:, None, :]  # padded columns go last
    _, indices = tf.math.top_k(-distance, k=k)
    return indices


def masked_batch_norm(name: str, momentum: float) -> tf.keras.layers.BatchNormalization:
    """Batch norm whose statistics skip masked entries (``fused=False``: the fused kernel ignores the mask, and
    padding would bias the statistics)."""
    return tf.keras.layers.BatchNormalization(momentum=momentum, fused=False, name=name)


class SharedMomentum:
    """A batch norm's ``momentum`` that reads a variable each time Keras computes ``1 - momentum`` (tf_keras'
    non-fused batch norm does exactly that when it updates its moving statistics), so a schedule can move it every
    step without retracing. Deliberately not a ``tf.Variable`` attribute of the layer: Keras would track that as
    one more weight of every batch norm and change the saved weights' layout."""

    def __init__(self, variable: tf.Variable):
        self.variable = variable

    def __rsub__(self, other):
        return other - self.variable.read_value()


def share_batch_norm_momentum(model: tf.keras.layers.Layer, momentum: tf.Variable) -> int:
    """Point every batch norm inside ``model`` at one momentum variable. Returns how many layers now share it."""
    norms = [layer for layer in model.submodules if isinstance(layer, tf.keras.layers.BatchNormalization)]
    for layer in norms:
        if layer.fused:
            raise ValueError(f"{layer.name}: a fused batch norm reads its momentum once, at tracing; use fused=False")
        layer.momentum = SharedMomentum(momentum)
    return len(norms)


@tf.keras.utils.register_keras_serializable(package="ucluster_spark")
class GAPLayer(tf.keras.layers.Layer):
    """Graph attention pooling over each particle's k nearest neighbours, as in ABCnet/UCluster.

    For particle i with neighbours j (i itself included):
    edge features e_ij = ReLU(BN(W_e (x_i - x_j) + b_e)); self logit s_i = ReLU(BN(w_s . ReLU(BN(W_s x_i)) + c_s));
    neighbour logit n_ij = ReLU(BN(w_n . e_ij + c_n)); attention a_ij = softmax_j LeakyReLU_0.2(s_i + n_ij);
    output ReLU(sum_j a_ij e_ij + b); local features max_j e_ij.

    Args:
        features: output features per particle (F').
        k: neighbours per particle (the particle itself included).
        batch_norm_momentum: initial momentum of the batch norms (a schedule may share a variable later).
        mask_padding: False: ``mask`` only pushes padded particles last in the kNN search, and padded slots take
            part in everything else as in the original (a padded slot's neighbours are then the real particles
            nearest to it, its output is not zero, and it counts in the batch-norm statistics).

    Call arguments:
        inputs: ``(x, coords, mask)`` with x (B, N, F), kNN coordinates (B, N, C), mask (B, N).

    Returns:
        ``(attention_features, local_features)``, each (B, N, F').
    """

    def __init__(self, features: int, k: int, batch_norm_momentum: float = 0.9, mask_padding: bool = True, **kwargs):
        super().__init__(**kwargs)
        if features < 1 or k < 1:
            raise ValueError(f"GAPLayer needs features >= 1 and k >= 1. Received: features={features}, k={k}")
        self.features = int(features)
        self.k = int(k)
        self.batch_norm_momentum = float(batch_norm_momentum)
        self.mask_padding = bool(mask_padding)
        bn = self.batch_norm_momentum
        self.self_transform = tf.keras.layers.Dense(self.features, use_bias=False, name="self_transform")
        self.self_norm = masked_batch_norm("self_norm", bn)
        self.self_logit = tf.keras.layers.Dense(1, name="self_logit")
        self.self_logit_norm = masked_batch_norm("self_logit_norm", bn)
        self.edge_transform = tf.keras.layers.Dense(self.features, name="edge_transform")
        self.edge_norm = masked_batch_norm("edge_norm", bn)
        self.neighbour_logit = tf.keras.layers.Dense(1, name="neighbour_logit")
        self.neighbour_logit_norm = masked_batch_norm("neighbour_logit_norm", bn)

    def build(self, input_shape):
        self.output_bias = self.add_weight(
            name="output_bias", shape=(self.features,), initializer="zeros", trainable=True
        )
        super().build(input_shape)

    def call(self, inputs, training=None):
        x, coords, mask = inputs
        indices = knn_indices(coords, mask, self.k)  # (B, N, k)
        if not self.mask_padding:
            mask = tf.ones_like(mask)  # as run: padded slots take part in everything but the kNN ranking
        neighbours = tf.gather(x, indices, batch_dims=1)  # (B, N, k, F)
        neighbour_mask = tf.gather(mask, indices, batch_dims=1)  # (B, N, k)
        edge_mask = mask[:, :, None] * neighbour_mask  # statistics over real (particle, neighbour) pairs only
        edges = self.edge_transform(x[:, :, None, :] - neighbours)  # (B, N, k, F')
        edges = tf.nn.relu(self.edge_norm(edges, training=training, mask=edge_mask))
        new_features = tf.nn.relu(self.self_norm(self.self_transform(x), training=training, mask=mask))
        self_logit = tf.nn.relu(self.self_logit_norm(self.self_logit(new_features), training=training, mask=mask))
        neighbour_logit = self.neighbour_logit_norm(self.neighbour_logit(edges), training=training, mask=edge_mask)
        logits = self_logit[:, :, None, :] + tf.nn.relu(neighbour_logit)  # (B, N, k, 1)
        logits = tf.nn.leaky_relu(tf.squeeze(logits, -1), alpha=0.2)  # (B, N, k)
        logits += _NEG_INF * (1.0 - neighbour_mask)
        attention = tf.nn.softmax(logits, axis=-1)
        pooled = tf.nn.relu(tf.einsum("bnk,bnkf->bnf", attention, edges) + self.output_bias)
        local = tf.reduce_max(edges + _NEG_INF * (1.0 - neighbour_mask)[..., None], axis=2)
        keep = mask[..., None]
        return pooled * keep, local * keep

    def compute_output_shape(self, input_shape):
        x_shape = tf.TensorShape(input_shape[0])
        out = x_shape[:-1].concatenate([self.features])
        return out, out

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "features": self.features,
                "k": self.k,
                "batch_norm_momentum": self.batch_norm_momentum,
                "mask_padding": self.mask_padding,
            }
        )
        return config


@tf.keras.utils.register_keras_serializable(package="ucluster_spark")
class ParticleDense(tf.keras.layers.Layer):
    """A 1x1 convolution over particles (shared Dense), batch norm, ReLU; padded slots stay zero.

    Batch-norm statistics are taken over real particles only, so the padding fraction of a batch cannot shift them.
    """

    def __init__(self, units: int, batch_norm_momentum: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        if units < 1:
            raise ValueError(f"ParticleDense needs units >= 1. Received: units={units}")
        self.units = int(units)
        self.batch_norm_momentum = float(batch_norm_momentum)
        self.dense = tf.keras.layers.Dense(self.units, use_bias=False, name="dense")
        self.norm = masked_batch_norm("norm", self.batch_norm_momentum)

    def call(self, inputs, training=None):
        x, mask = inputs
        h = self.dense(x)
        h = self.norm(h, training=training, mask=mask)
        return tf.nn.relu(h) * mask[..., None]

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape[0])[:-1].concatenate([self.units])

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "batch_norm_momentum": self.batch_norm_momentum})
        return config


@tf.keras.utils.register_keras_serializable(package="ucluster_spark")
class MaskedPooling(tf.keras.layers.Layer):
    """(B, N, F), (B, N) -> (B, F) per jet.

    Modes: ``mean_all_slots`` averages over all N slots, padding (zeros) included, as the original's average pool
    did, so the result also scales with the number of particles; ``mean_real`` and ``max_real`` pool over real
    particles only.
    """

    MODES = EMBEDDING_POOLINGS

    def __init__(self, mode: str = "mean_all_slots", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"MaskedPooling mode must be one of {self.MODES}. Received: mode={mode!r}")
        self.mode = mode

    def call(self, inputs):
        x, mask = inputs
        m = mask[..., None]
        if self.mode == "mean_all_slots":
            return tf.reduce_mean(x * m, axis=1)
        if self.mode == "mean_real":
            return tf.reduce_sum(x * m, axis=1) / tf.maximum(tf.reduce_sum(m, axis=1), 1.0)
        return tf.reduce_max(x + _NEG_INF * (1.0 - m), axis=1)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config


@tf.keras.utils.register_keras_serializable(package="ucluster_spark")
class StepSeededDropout(tf.keras.layers.Layer):
    """Dropout whose masks are a function of (seed, number of training calls so far). The count is a weight, saved
    in every checkpoint, so a resumed run draws exactly the masks the uninterrupted run would have; Keras'
    Dropout draws from a process-local random stream that restarts with the process. Every rank draws the same
    masks (for different jets)."""

    def __init__(self, rate: float, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = int(seed)

    def build(self, input_shape):
        self.calls = self.add_weight(name="calls", shape=(), dtype=tf.int64, initializer="zeros", trainable=False)
        super().build(input_shape)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        seed = tf.stack([tf.constant(self.seed, tf.int64), self.calls.read_value()])
        keep = tf.random.stateless_uniform(tf.shape(x), seed=seed) >= self.rate
        self.calls.assign_add(1)
        return tf.where(keep, x / (1.0 - self.rate), tf.zeros_like(x))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
