"""Driver side: a training run that starts from another run's weights (``train.init_from``), checked before any
rank starts, so a wrong path or a model of other shape is one line, not a failure inside a rank."""

from __future__ import annotations

from ucluster_spark import store
from ucluster_spark.config import Config
from ucluster_spark.errors import ConfigError, InputMissing

SHAPING_KEYS = {
    "model": ("gap1_features", "mlp1", "gap2_features", "mlp2", "n_clusters", "embedding_dim", "aux_hidden",
              "aux_batch_norm"),
    "data": ("feature_set", "max_constituents", "mass_bins", "aux_mass_columns"),
}  # fmt: skip
"""The settings that shape the weights or the inputs they read: these must agree; the rest (padding masking,
pooling, the whole loss and schedule) may differ from the run the weights come from."""


def check_init_from(cfg: Config) -> None:
    """``train.init_from`` names a finished run whose weights fit this config's model."""
    if not cfg.train.init_from:
        return
    layout = store.RunLayout(cfg.train.init_from)
    if not layout.weights.is_file() or not layout.model_config.is_file():
        raise InputMissing(
            f"train.init_from={cfg.train.init_from}: not a finished run (needs {layout.weights} and "
            f"{layout.model_config}); give a run directory that training or ucluster-import wrote"
        )
    theirs = Config.from_dict(store.read_json(layout.model_config), str(layout.model_config)).to_dict()
    ours = cfg.to_dict()
    for section, keys in SHAPING_KEYS.items():
        for key in keys:
            if ours[section][key] != theirs[section][key]:
                raise ConfigError(
                    f"train.init_from={cfg.train.init_from}: its model has {section}.{key}={theirs[section][key]!r}, "
                    f"this run {ours[section][key]!r}; set {section}.{key} to match to start from it"
                )
