"""Graph layers of ABCnet (Mikuni & Canelli, arXiv:2001.05311): kNN graphs over particles and attention pooling.

Two particle layouts. Slots (B, N, F) with a float ``mask`` (B, N), 1 for real particles and 0 for zero padding:
padded particles are never chosen as neighbours while a jet has enough real ones, never weigh in attention,
batch-norm statistics or real-particle pooling, and come out as zeros (an average over all slots counts them as
zeros, which is how the original's z carries the jet's multiplicity). Rows (P, F): the real particles of the batch
only (``particle_rows``), with their (jet, slot) indices; the same numbers without computing the padding (jets
fill about half of their 100 slots).
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


def knn_distances(coords: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """(B, N, C), (B, N) -> (B, N, N) squared distances between a jet's slots, padded columns pushed last.

    Padded rows are pushed too, as the original did: a padded slot (processed like a particle when the padding is
    not masked) then sees its real neighbours at 1000 + d, where float32 keeps d only to ~6e-5, so among real
    particles closer than that to the jet axis the lowest slot wins, exactly as in the original graph."""
    squared = tf.reduce_sum(tf.square(coords), axis=-1)  # (B, N)
    inner = tf.matmul(coords, coords, transpose_b=True)  # (B, N, N)
    distance = squared[:, :, None] - 2.0 * inner + squared[:, None, :]
    pushed = PADDING_DISTANCE * (1.0 - mask)
    return distance + pushed[:, None, :] + pushed[:, :, None]


def knn_indices(coords: tf.Tensor, mask: tf.Tensor, k: int) -> tf.Tensor:
    """(B, N, C), (B, N) -> (B, N, k) indices of each particle's k nearest particles (itself first)."""
    return tf.math.top_k(-knn_distances(coords, mask), k=k)[1]


def particle_rows(real: tf.Tensor) -> tf.Tensor:
    """(B, N) particle mask -> (P, 2) int64 (jet, slot) index of every real particle, in jet then slot order."""
    return tf.where(real > 0)


def gather_rows(x: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """Slots (B, N, F) -> rows (P, F) of the real particles."""
    return tf.gather_nd(x, rows)


def scatter_rows(values: tf.Tensor, rows: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Rows (P, F) -> slots (B, N, F), zeros at padded slots (``mask`` gives B and N)."""
    shape = tf.concat([tf.shape(mask, out_type=tf.int64), tf.shape(values, out_type=tf.int64)[1:]], axis=0)
    return tf.scatter_nd(rows, values, shape)


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
class NeighbourGraph(tf.keras.layers.Layer):
    """Each particle's k nearest particles (itself first) by Euclidean distance in ``coords``, padded slots ranked
    last.

    Args:
        k: neighbours per particle.
        mask_neighbours: False (as the original ran): padded slots that a short jet takes as neighbours count as
            neighbours (neighbour mask all ones). Slots only: packed rows hold no padded slot to count.

    Call arguments:
        inputs: ``[coords, mask]``, (B, N, C) and (B, N), for the padded layout; ``[coords, mask, rows]`` with the
            (P, 2) ``rows`` of ``particle_rows`` for the packed layout.

    Returns:
        ``(neighbours, neighbour_mask)``: (B, N, k) slot indices and their mask, or, packed, (P, k) row indices and
        their mask (a padded neighbour of a jet with fewer than k particles points at the particle itself, masked).
    """

    def __init__(self, k: int, mask_neighbours: bool = True, **kwargs):
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"NeighbourGraph needs k >= 1. Received: k={k}")
        self.k = int(k)
        self.mask_neighbours = bool(mask_neighbours)

    def call(self, inputs):
        coords, mask, *packed = inputs
        if not packed:
            neighbours = knn_indices(coords, mask, self.k)  # (B, N, k)
            if not self.mask_neighbours:
                return neighbours, tf.ones(tf.shape(neighbours), mask.dtype)
            return neighbours, tf.gather(mask, neighbours, batch_dims=1)
        rows = packed[0]
        # Ranked for the real particles only: each row's distances to its jet's slots, then slots -> rows.
        slots = tf.math.top_k(-tf.gather_nd(knn_distances(coords, mask), rows), k=self.k)[1]  # (P, k)
        count = tf.shape(rows, out_type=tf.int32)[0]
        row_of_slot = tf.scatter_nd(rows, tf.range(1, count + 1), tf.shape(mask, out_type=tf.int64)) - 1  # -1: pad
        jet = tf.cast(rows[:, :1], tf.int32)
        neighbour_rows = tf.gather_nd(row_of_slot, tf.stack([tf.broadcast_to(jet, tf.shape(slots)), slots], -1))
        real = neighbour_rows >= 0
        own = tf.broadcast_to(tf.range(count)[:, None], tf.shape(neighbour_rows))
        return tf.where(real, neighbour_rows, own), tf.cast(real, mask.dtype)

    def get_config(self):
        return {**super().get_config(), "k": self.k, "mask_neighbours": self.mask_neighbours}


@tf.keras.utils.register_keras_serializable(package="ucluster_spark")
class GAPLayer(tf.keras.layers.Layer):
    """Graph attention pooling over each particle's k nearest neighbours, as in ABCnet/UCluster.

    For particle i with neighbours j (i itself included):
    edge features e_ij = ReLU(BN(W_e (x_i - x_j) + b_e)); self logit s_i = ReLU(BN(w_s . ReLU(BN(W_s x_i)) + c_s));
    neighbour logit n_ij = ReLU(BN(w_n . e_ij + c_n)); attention a_ij = softmax_j LeakyReLU_0.2(s_i + n_ij);
    output ReLU(sum_j a_ij e_ij + b); local features max_j e_ij. W_e (x_i - x_j) is computed as W_e x_i - W_e x_j:
    one product per particle instead of one per edge.

    Works on either particle layout: rows (P, F) of real particles only (packed: every row counts), or slots
    (B, N, F) with a particle mask (padded: masked slots never weigh in attention or batch-norm statistics and come
    out as zeros).

    Args:
        features: output features per particle (F').
        k: neighbours per particle (the particle itself included).
        batch_norm_momentum: initial momentum of the batch norms (a schedule may share a variable later).

    Call arguments:
        inputs: ``[x, neighbours, neighbour_mask]`` (every row a particle) or ``[x, neighbours, neighbour_mask,
            mask]`` (slots with their particle mask), as ``NeighbourGraph`` gives them.

    Returns:
        ``(attention_features, local_features)``, each x's shape with F' features.
    """

    def __init__(self, features: int, k: int, batch_norm_momentum: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        if features < 1 or k < 1:
            raise ValueError(f"GAPLayer needs features >= 1 and k >= 1. Received: features={features}, k={k}")
        self.features = int(features)
        self.k = int(k)
        self.batch_norm_momentum = float(batch_norm_momentum)
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
        x, neighbours, neighbour_mask, *slots = inputs
        mask = slots[0] if slots else None
        batch_dims = len(x.shape) - 2  # 1 for slots (B, N, F), 0 for rows (P, F)
        edge_mask = neighbour_mask if mask is None else mask[..., None] * neighbour_mask
        projected = self.edge_transform(x)  # W_e x + b_e per particle
        neighbour_projected = tf.gather(projected, neighbours, batch_dims=batch_dims)  # (..., k, F')
        edges = projected[..., None, :] - neighbour_projected + self.edge_transform.bias  # W_e (x_i - x_j) + b_e
        edges = tf.nn.relu(self.edge_norm(edges, training=training, mask=edge_mask))
        edges *= neighbour_mask[..., None]  # >= 0, so a missing neighbour (0) never wins the max over real ones
        new_features = tf.nn.relu(self.self_norm(self.self_transform(x), training=training, mask=mask))
        self_logit = tf.nn.relu(self.self_logit_norm(self.self_logit(new_features), training=training, mask=mask))
        neighbour_logit = self.neighbour_logit_norm(self.neighbour_logit(edges), training=training, mask=edge_mask)
        logits = self_logit[..., None, :] + tf.nn.relu(neighbour_logit)  # (..., k, 1)
        logits = tf.nn.leaky_relu(logits, alpha=0.2) + _NEG_INF * (1.0 - neighbour_mask[..., None])
        attention = tf.nn.softmax(logits, axis=-2)  # over the k neighbours
        pooled = tf.nn.relu(tf.reduce_sum(attention * edges, axis=-2) + self.output_bias)
        local = tf.reduce_max(edges, axis=-2)  # the particle itself is always a real neighbour
        if mask is None:
            return pooled, local
        keep = mask[..., None]
        return pooled * keep, local * keep

    def compute_output_shape(self, input_shape):
        out = tf.TensorShape(input_shape[0])[:-1].concatenate([self.features])
        return out, out

    def get_config(self):
        config = super().get_config()
        config.update({"features": self.features, "k": self.k, "batch_norm_momentum": self.batch_norm_momentum})
        return config


@tf.keras.utils.register_keras_serializable(package="ucluster_spark")
class ParticleDense(tf.keras.layers.Layer):
    """A 1x1 convolution over particles (shared Dense), batch norm, ReLU.

    Call with rows of real particles ``x`` (P, F), or with slots and their mask ``[x, mask]`` ((B, N, F), (B, N)):
    then batch-norm statistics are taken over real particles only, so the padding fraction of a batch cannot shift
    them, and padded slots stay zero.
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
        x, mask = inputs if isinstance(inputs, (list, tuple)) else (inputs, None)
        h = tf.nn.relu(self.norm(self.dense(x), training=training, mask=mask))
        return h if mask is None else h * mask[..., None]

    def compute_output_shape(self, input_shape):
        shape = input_shape[0] if isinstance(input_shape, (list, tuple)) else input_shape
        return tf.TensorShape(shape)[:-1].concatenate([self.units])

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "batch_norm_momentum": self.batch_norm_momentum})
        return config


@tf.keras.utils.register_keras_serializable(package="ucluster_spark")
class MaskedPooling(tf.keras.layers.Layer):
    """Per-particle features -> (B, F) per jet.

    Modes: ``mean_all_slots`` averages over all N slots, padding (zeros) included, as the original's average pool
    did, so the result also scales with the number of particles; ``mean_real`` and ``max_real`` pool over real
    particles only.

    Call arguments:
        inputs: ``[x, mask]`` with slots x (B, N, F) and mask (B, N), or ``[x, mask, rows]`` with rows of real
            particles x (P, F) and their (P, 2) (jet, slot) indices (``particle_rows``).
    """

    MODES = EMBEDDING_POOLINGS

    def __init__(self, mode: str = "mean_all_slots", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"MaskedPooling mode must be one of {self.MODES}. Received: mode={mode!r}")
        self.mode = mode

    def call(self, inputs):
        x, mask, *packed = inputs
        if packed:
            return self._pool_rows(x, mask, packed[0][:, 0])
        m = mask[..., None]
        if self.mode == "mean_all_slots":
            return tf.reduce_mean(x * m, axis=1)
        if self.mode == "mean_real":
            return tf.reduce_sum(x * m, axis=1) / tf.maximum(tf.reduce_sum(m, axis=1), 1.0)
        return tf.reduce_max(x + _NEG_INF * (1.0 - m), axis=1)

    def _pool_rows(self, x, mask, jet):
        jets = tf.shape(mask)[0]
        if self.mode == "max_real":
            return tf.maximum(tf.math.unsorted_segment_max(x, jet, jets), _NEG_INF)  # a jet without particles
        total = tf.math.unsorted_segment_sum(x, jet, jets)
        if self.mode == "mean_all_slots":
            return total / tf.cast(tf.shape(mask)[1], x.dtype)
        return total / tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)

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
