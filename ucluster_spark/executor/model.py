"""UCluster's jet model: ABCnet backbone -> per-jet embedding z -> auxiliary mass-bin head on z, plus centroids.

Mikuni & Canelli, "Unsupervised clustering for collider physics", Phys. Rev. D 103, 092007 (arXiv:2010.07106).
The auxiliary head reads z itself (not features beside it): that is what stops the clustering loss from
collapsing z onto one centroid. The batch norm before z's ReLU keeps every dimension spread across a batch, and the
batch norm inside the head makes the auxiliary loss blind to z's scale and offset, so the clustering loss can
tighten z without fighting it.
"""

from __future__ import annotations

import tensorflow as tf

from ucluster_spark.config import Config
from ucluster_spark.executor.layers import (
    GAPLayer,
    MaskedPooling,
    NeighbourGraph,
    ParticleDense,
    StepSeededDropout,
    gather_rows,
    particle_mask,
    particle_rows,
    scatter_rows,
)
from ucluster_spark.executor.losses import squared_distances
from ucluster_spark.schema import feature_names, knn_coordinate_indices


def build_backbone(cfg: Config) -> tf.keras.Model:
    """Functional ABCnet as the original UCluster ran it: (B, N, F) constituents -> {"z": (B, D),
    "aux_logits": (B, targets, mass_bins)}. Inside, the per-particle layers work on rows of the batch's real
    particles (``model.particle_layout: packed``) or on every slot with the padding masked (``padded``, and always
    with ``mask_padding: false``); the kNN graphs are ranked over each jet's slots in either.

    Skip connections as run: the second MLP reads [raw features, GAPLayer 2], and the embedding convolution reads
    every intermediate per-particle layer plus both GAPLayers' local features (64 + 128 + 256 + 256 + 16 + 128 =
    848 channels at the default sizes).
    """
    m, d = cfg.model, cfg.data
    n_features = len(feature_names(d.feature_set))
    coord_idx = knn_coordinate_indices(d.feature_set)
    bn = cfg.train.bn_momentum_start

    x = tf.keras.Input(shape=(d.max_constituents, n_features), name="constituents")  # (B, N, F)
    real = tf.keras.layers.Lambda(particle_mask, name="mask")(x)  # (B, N)
    coords = tf.keras.layers.Lambda(lambda t: tf.gather(t, coord_idx, axis=-1), name="eta_phi")(x)
    if m.mask_padding and m.particle_layout == "packed":  # rows: the real particles only
        rows = tf.keras.layers.Lambda(particle_rows, name="particle_rows")(real)  # (P, 2)
        particles = tf.keras.layers.Lambda(lambda t: gather_rows(*t), name="particles")([x, rows])  # (P, F)
        row_mask, packed = [], [rows]
    else:  # slots; as run (mask_padding false) every slot is a particle
        particles, row_mask, packed = x, [real] if m.mask_padding else [], []
    # As run, only the first kNN search ranks padded slots last.
    slot_mask = real if m.mask_padding else tf.keras.layers.Lambda(tf.ones_like, name="all_slots")(real)

    def per_particle(t):
        return [t, *row_mask] if row_mask else t

    graph1 = NeighbourGraph(m.k_neighbours, m.mask_padding, name="graph1")([coords, real, *packed])
    att1, local1 = GAPLayer(m.gap1_features, m.k_neighbours, bn, name="gap1")([particles, *graph1, *row_mask])
    h = tf.keras.layers.Concatenate(name="gap1_out")([particles, att1])
    mlp_outputs = []
    for i, units in enumerate(m.mlp1):
        h = ParticleDense(units, bn, name=f"mlp1_{i}")(per_particle(h))
        mlp_outputs.append(h)
    # The second graph is built in the features of the first MLP, over the jet's slots.
    h_slots = tf.keras.layers.Lambda(lambda t: scatter_rows(*t), name="mlp1_slots")([h, *packed, real]) if packed else h
    graph2 = NeighbourGraph(m.k_neighbours, m.mask_padding, name="graph2")([h_slots, slot_mask, *packed])
    att2, local2 = GAPLayer(m.gap2_features, m.k_neighbours, bn, name="gap2")([h, *graph2, *row_mask])
    h = tf.keras.layers.Concatenate(name="gap2_out")([particles, att2])
    for i, units in enumerate(m.mlp2):
        h = ParticleDense(units, bn, name=f"mlp2_{i}")(per_particle(h))
        mlp_outputs.append(h)
    h = tf.keras.layers.Concatenate(name="skip")([*mlp_outputs, local1, local2])  # (..., 848)
    h = ParticleDense(m.z_dim, bn, name="embedding_conv")(per_particle(h))
    z = MaskedPooling(m.embedding_pooling, name="z")([h, slot_mask, *packed])  # (B, D)

    a = z
    for i, units in enumerate(m.aux_hidden):
        a = tf.keras.layers.Dense(units, name=f"aux_{i}")(a)
        if m.aux_batch_norm:
            a = tf.keras.layers.BatchNormalization(momentum=bn, name=f"aux_norm_{i}")(a)
        a = tf.keras.layers.ReLU(name=f"aux_relu_{i}")(a)
        if m.aux_dropout:
            a = StepSeededDropout(m.aux_dropout, seed=cfg.train.seed * 100 + i, name=f"aux_dropout_{i}")(a)
    n_targets = len(d.aux_mass_columns)
    a = tf.keras.layers.Dense(n_targets * d.mass_bins, name="aux_dense")(a)
    aux_logits = tf.keras.layers.Reshape((n_targets, d.mass_bins), name="aux_logits")(a)
    return tf.keras.Model(inputs=x, outputs={"z": z, "aux_logits": aux_logits}, name="abcnet")


@tf.keras.utils.register_keras_serializable(package="ucluster_spark")
class UCluster(tf.keras.Model):
    """The backbone plus the centroids mu (n_clusters x embedding dim, trainable unless a k-means update moves
    them), saved and restored together."""

    def __init__(self, cfg_dict: dict, **kwargs):
        super().__init__(**kwargs)
        self.cfg_dict = cfg_dict
        cfg = Config.from_dict(cfg_dict)
        self.backbone = build_backbone(cfg)
        shape = (cfg.model.n_clusters, cfg.model.z_dim)
        self.centroids = self.add_weight(name="centroids", shape=shape, initializer="random_normal", trainable=True)
        # Jets each centroid has absorbed (decayed): the state of the mini-batch k-means update, saved with it.
        self.centroid_counts = self.add_weight(
            name="centroid_counts", shape=(cfg.model.n_clusters,), initializer="zeros", trainable=False
        )

    def call(self, x, training=None):
        out = self.backbone(x, training=training)
        return {**out, "distances": squared_distances(out["z"], self.centroids)}

    def get_config(self):
        return {"cfg_dict": self.cfg_dict}


def build_model(cfg: Config) -> UCluster:
    model = UCluster(cfg.to_dict(), name="ucluster")
    n_features = len(feature_names(cfg.data.feature_set))
    model(tf.zeros((1, cfg.data.max_constituents, n_features)), training=False)  # create every variable
    return model
