"""Using a finished run: rebuild its model from the run directory (embed splits with ``train.embeddings_of``).

Called wherever the model is needed (the driver for a benchmark, once per executor process for cluster assignment),
so it never imports Spark or Horovod.
"""

from __future__ import annotations

import json
from pathlib import Path

from ucluster_spark import store
from ucluster_spark.config import Config
from ucluster_spark.model import UCluster, build_model


def load_run(run_dir: str | Path) -> tuple[Config, UCluster]:
    """(config the model was trained with, model with its weights and centroids) of a finished run."""
    layout = store.RunLayout(run_dir)
    if not layout.weights.is_file():
        raise FileNotFoundError(f"{run_dir}: no trained model here (expected {layout.weights})")
    cfg = Config.from_dict(json.loads(layout.model_config.read_text()))
    model = build_model(cfg)
    model.load_weights(str(layout.weights))
    return cfg, model
