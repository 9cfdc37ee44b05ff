"""Using a finished run: rebuild its model from the run directory and embed jets with it.

Called wherever the model is needed (the driver for a benchmark, once per executor process for cluster assignment),
so it never imports Spark or Horovod.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ucluster_spark import schema, store
from ucluster_spark.config import Config
from ucluster_spark.model import UCluster


def load_run(run_dir: str | Path) -> tuple[Config, UCluster]:
    """(config the model was trained with, model with its weights and centroids) of a finished run."""
    from ucluster_spark.model import build_model

    layout = store.RunLayout(run_dir)
    if not layout.weights.is_file():
        raise FileNotFoundError(f"{run_dir}: no trained model here (expected {layout.weights})")
    cfg = Config.from_dict(json.loads(layout.model_config.read_text()))
    model = build_model(cfg)
    model.load_weights(str(layout.weights))
    return cfg, model


def embed_split(model: UCluster, cfg: Config, url: str, batch_size: int = 256) -> dict[str, np.ndarray]:
    """One ordered pass over a whole split in inference mode: embeddings z, centroid distances and labels."""
    from ucluster_spark.reader import evaluation_batches

    z, distances, labels = [], [], []
    with evaluation_batches(
        url,
        shard=0,
        shard_count=1,
        max_constituents=cfg.data.max_constituents,
        n_features=len(schema.feature_names(cfg.data.feature_set)),
        batch_size=batch_size,
        with_labels=True,
    ) as batches:
        for batch in batches:
            out = model(batch[schema.CONSTITUENTS], training=False)
            z.append(out["z"].numpy())
            distances.append(out["distances"].numpy())
            labels.append(batch[schema.LABEL].numpy())
    return {"z": np.concatenate(z), "distances": np.concatenate(distances), "label": np.concatenate(labels)}
