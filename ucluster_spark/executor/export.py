"""A finished run's model as a TensorFlow SavedModel that runs without this package (``jobs/export.py``): one
serving signature from a batch of jets' constituents to what the evaluate job writes for them — the nearest
centroid, the soft assignment at the run's final α, the embedding z and the squared distances to the centroids."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import tensorflow as tf

from ucluster_spark import store
from ucluster_spark.errors import ConfigError, InputMissing
from ucluster_spark.executor.inference import load_run
from ucluster_spark.executor.losses import soft_assignment, squared_distances
from ucluster_spark.plan import trained_alpha
from ucluster_spark.schema import CLUSTER, DISTANCES, EMBEDDING, SOFT_ASSIGNMENT, feature_names

SIGNATURE = "serving_default"
ONNX_FILE = "model.onnx"
ONNX_OPSET = 17
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


def export_saved_model(
    run_dir: str | Path, output: str | Path, overwrite: bool = False, onnx: bool = False
) -> dict[str, object]:
    """Write the run's SavedModel to ``output`` (staged, renamed into place when complete), with ``onnx`` also its
    ONNX conversion ``model.onnx`` (tf2onnx); what it holds."""
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
    if onnx and importlib.util.find_spec("tf2onnx") is None:
        raise ConfigError("--onnx needs the tf2onnx package (pip install -e '.[onnx]'; docs/jobs.md)")
    with store.atomic_directory(final, overwrite=overwrite) as staging:
        tf.saved_model.save(module, str(staging), signatures={SIGNATURE: module.serve})
        if onnx:
            _convert_to_onnx(staging, staging / ONNX_FILE)
    return {"output": str(final), "signature": SIGNATURE, "input": [None, *shape], "alpha": alpha,
            "outputs": [CLUSTER, SOFT_ASSIGNMENT, EMBEDDING, DISTANCES],
            "onnx": str(final / ONNX_FILE) if onnx else None}  # fmt: skip


def _convert_to_onnx(saved_model: Path, target: Path) -> None:
    """tf2onnx's converter on the SavedModel just written (its command line: the route it supports for every
    TensorFlow release; its Python API for Keras models lags behind). A failure is ours, with tf2onnx's last words."""
    command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model), "--output", str(target),
               "--opset", str(ONNX_OPSET)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not target.is_file():
        raise RuntimeError(f"tf2onnx could not convert the model: {done.stderr.strip()[-2000:]}")
