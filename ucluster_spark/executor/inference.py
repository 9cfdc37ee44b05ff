"""Using a finished run: its model rebuilt from the run directory, and cluster assignment of jet batches.

Runs wherever the model is needed: on the driver (benchmarks) and inside Spark executors, where the evaluate job's
``mapInPandas`` calls ``assign_frames``. It never imports Spark or Horovod. An executor's Python worker keeps the
model it loaded (``cached_assigner``) for every later task, so the weights are read once per process, not per
partition or batch.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ucluster_spark import store
from ucluster_spark.config import Config
from ucluster_spark.errors import InputFileError, InputMissing
from ucluster_spark.executor.model import UCluster, build_model
from ucluster_spark.schema import (
    ASSIGNMENT_COLUMNS,
    CLUSTER,
    CONSTITUENTS,
    DISTANCES,
    EMBEDDING,
    JET_ID,
    LABEL,
    MASS,
    SOFT_ASSIGNMENT,
    SPLIT,
    feature_names,
)


def load_run(run_dir: str | Path) -> tuple[Config, UCluster]:
    """(config the model was trained with, model with its weights and centroids) of a finished run."""
    layout = store.RunLayout(run_dir)
    if not layout.weights.is_file():
        raise InputMissing(f"{run_dir}: no trained model here (expected {layout.weights})")
    cfg = Config.from_dict(json.loads(layout.model_config.read_text()))
    model = build_model(cfg)
    model.load_weights(str(layout.weights))
    return cfg, model


class Assigner:
    """A trained model as a function of constituent batches: z, distances to the centroids, soft assignment."""

    def __init__(self, run_dir: str | Path):
        import tensorflow as tf

        from ucluster_spark.executor.losses import soft_assignment, squared_distances

        self.cfg, model = load_run(run_dir)
        self.shape = (self.cfg.data.max_constituents, len(feature_names(self.cfg.data.feature_set)))
        embed = tf.keras.Model(model.backbone.input, model.backbone.output["z"])  # no auxiliary head: forward only
        centroids = model.centroids

        @tf.function(input_signature=[tf.TensorSpec([None, *self.shape], tf.float32), tf.TensorSpec([], tf.float32)])
        def predict(x, alpha):
            z = embed(x, training=False)
            distances = squared_distances(z, centroids)
            return z, distances, soft_assignment(distances, alpha)

        self._predict = predict

    def __call__(self, constituents: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import tensorflow as tf

        x = tf.constant(constituents.reshape(-1, *self.shape), tf.float32)
        z, distances, soft = self._predict(x, tf.constant(alpha, tf.float32))
        return z.numpy(), distances.numpy(), soft.numpy()

    def assign(self, frame, alpha: float):
        """One pandas batch of jets (jet_id, split, label, mass, constituents) -> ``schema.ASSIGNMENT_COLUMNS``."""
        flat = frame[CONSTITUENTS].to_numpy()
        expected = self.shape[0] * self.shape[1]
        for jet_id, values in zip(frame[JET_ID], flat, strict=True):
            if len(values) != expected:
                raise InputFileError(
                    f"jet {jet_id!r}: column {CONSTITUENTS!r} holds {len(values)} values, the model expects "
                    f"{self.shape[0]} particles x {self.shape[1]} features = {expected}"
                )
        z, distances, soft = self(np.stack(flat).astype(np.float32, copy=False), alpha)
        out = frame[[JET_ID, SPLIT, MASS]].copy()
        out[LABEL] = frame[LABEL].astype("Int32")  # nullable: unlabelled jets stay null
        out[CLUSTER] = np.argmin(distances, axis=1).astype(np.int32)
        out[EMBEDDING], out[DISTANCES], out[SOFT_ASSIGNMENT] = list(z), list(distances), list(soft)
        return out[list(ASSIGNMENT_COLUMNS)]


def configure_threads(threads: int) -> None:
    """TensorFlow threads of this executor process: its task's cores (a later call in the process is a no-op)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already running in this process: keep its pools
        pass


@functools.lru_cache(maxsize=2)
def cached_assigner(run_dir: str, threads: int) -> Assigner:
    """The process's model: loaded by its first task, reused by every later task of the same Python worker."""
    configure_threads(threads)
    return Assigner(run_dir)


def assign_frames(
    frames: Iterator,
    *,
    run_dir: str,
    alpha: float,
    batch_size: int,
    threads: int,
    on_load: Callable[[], None] | None = None,
) -> Iterator:
    """``mapInPandas`` body: every jet of the partition's pandas frames, ``batch_size`` jets per forward pass.
    ``on_load`` is called when this call had to load the model (counts loads per job)."""
    loads_before = cached_assigner.cache_info().misses
    assigner = cached_assigner(run_dir, threads)
    if on_load is not None and cached_assigner.cache_info().misses > loads_before:
        on_load()
    for frame in frames:
        for start in range(0, len(frame), batch_size):
            yield assigner.assign(frame.iloc[start : start + batch_size], alpha)
