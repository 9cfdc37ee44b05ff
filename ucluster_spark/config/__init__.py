"""One typed configuration for every stage, loaded from ``conf/*.yaml`` and overridable as ``section.key=value``.

``sections.py`` holds the settings, ``rules.py`` the rules between them, ``loading.py`` the whole ``Config`` and how
it is read. Only plain dicts (``Config.to_dict``) travel to executors; ``Config.from_dict`` rebuilds it there.
"""

from ucluster_spark.config.loading import Config, Flags, load, parse_override
from ucluster_spark.config.sections import (
    SECTION_NAMES,
    DataConfig,
    EvaluateConfig,
    LossConfig,
    ModelConfig,
    PipelineConfig,
    RunConfig,
    TrackingConfig,
    TrainConfig,
)
from ucluster_spark.errors import ConfigError

__all__ = [
    "SECTION_NAMES",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvaluateConfig",
    "Flags",
    "LossConfig",
    "ModelConfig",
    "PipelineConfig",
    "RunConfig",
    "TrackingConfig",
    "TrainConfig",
    "load",
    "parse_override",
]
