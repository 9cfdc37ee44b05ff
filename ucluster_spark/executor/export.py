"""A finished run's model as a TensorFlow SavedModel that runs without this package (``jobs/export.py``): one
serving signature from a batch of jets' constituents to what the evaluate job writes for them — the nearest
centroid, the soft assignment at the run's final α, the embedding z and the squared distances to the centroids."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from ucluster_spark import store
from ucluster_spark.errors import InputMissing
from ucluster_spark.executor.inference import load_run
from ucluster_spark.executor.losses import soft_assignment, squared_distances
from ucluster_spark.plan import trained_alpha
from ucluster_spark.schema import CLUSTER, DISTANCES, EMBEDDING, SOFT_ASSIGNMENT, feature_names

SIGNATURE = "serving_default"
INPUT = "constituents"


class ServingModel(tf.Module):
    """The trained embedding and centroids with α fixed: constituents (N, particles, features) -> outputs."""

    def __init__(self, embed: tf.keras.Model, centroids: tf.Variable, alpha: float, shape: tuple[int, int]) -> None:
        super().__init__(name="ucluster")
        self.embed, self.centroids = embed, centroids
        self.alpha = tf.constant(alpha, tf.float32)
        self.serve = tf.function(self._serve, input_signature=[tf.TensorSpec([None, *shape], tf.float32, name=INPUT)])

    def _serve(self, constituents: tf.Tensor) -> dict[str, tf.Tensor]:
        z = self.embed(constituents, training=False)
        distances = squared_distances(z, self.centroids)
        return {
            CLUSTER: tf.argmin(distances, axis=1, output_type=tf.int32),
            EMBEDDING: z,
            DISTANCES: distances,
            SOFT_ASSIGNMENT: soft_assignment(distances, self.alpha),
        }  # the assignments' column names


def export_saved_model(run_dir: str | Path, output: str | Path, overwrite: bool = False) -> dict[str, object]:
    """Write the run's SavedModel to ``output`` (staged, renamed into place when complete); what it holds."""
    layout = store.RunLayout(run_dir)
    if not layout.metrics.is_file():
        raise InputMissing(f"{layout.root}: not a finished training run (no {layout.metrics.name}); finish it first")
    cfg, model = load_run(run_dir)
    alpha = trained_alpha(store.read_json(layout.history) if layout.history.is_file() else [], cfg.loss.alpha_start)
    shape = (cfg.data.max_constituents, len(feature_names(cfg.data.feature_set)))
    embed = tf.keras.Model(model.backbone.input, model.backbone.output["z"])  # the forward pass, no auxiliary head
    module = ServingModel(embed, model.centroids, alpha, shape)
    final = store.local_path(output)
    store.check_replaceable(final, "SavedModel", lambda p: (p / "saved_model.pb").is_file(), overwrite)
    with store.atomic_directory(final, overwrite=overwrite) as staging:
        tf.saved_model.save(module, str(staging), signatures={SIGNATURE: module.serve})
    return {"output": str(final), "signature": SIGNATURE, "input": [None, *shape], "alpha": alpha,
            "outputs": [CLUSTER, SOFT_ASSIGNMENT, EMBEDDING, DISTANCES]}  # fmt: skip
