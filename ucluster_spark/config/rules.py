"""The rules a configuration must follow between its settings, one function per section (types are checked when
the configuration is built). Every message starts with the key it is about: ``loading.load`` uses that to name
where the offending value came from (the flag, the override or the file)."""

from __future__ import annotations

from ucluster_spark.config.sections import (
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
from ucluster_spark.registry import LAUNCHERS, LOSS_TERMS, READERS, SOURCES
from ucluster_spark.schema import AUX_MASS_COLUMNS, FEATURE_SETS, KNOWN_CLASSES, SPLITS
from ucluster_spark.store import unsupported_location

EMBEDDING_POOLINGS = ("mean_all_slots", "mean_real", "max_real")
CENTROID_UPDATES = ("adam", "sgd", "kmeans")
STOP_RULES = ("never", "assignments", "loss")
ASSIGNMENTS = ("softmax", "sinkhorn")
PARTICLE_LAYOUTS = ("packed", "padded")


def _location(setting: str, value: str) -> None:
    problem = unsupported_location(value)
    if problem:
        raise ConfigError(f"{setting}={problem}")


def check_data(d: DataConfig) -> None:
    """The data jobs check only these (a model setting cannot refuse a dataset). Normalises the mass window."""
    _location("data.path", d.path)
    _location("data.generated_root", d.generated_root)
    unknown = [c for c in d.classes if c not in KNOWN_CLASSES]
    if unknown:
        raise ConfigError(f"data.classes: unknown class {unknown[0]!r}; known: {list(KNOWN_CLASSES)}")
    if len(set(d.classes)) != len(d.classes) or not d.classes:
        raise ConfigError(f"data.classes must be distinct and non-empty, got {d.classes}")
    if d.feature_set not in FEATURE_SETS:
        raise ConfigError(f"data.feature_set: unknown {d.feature_set!r}; known: {sorted(FEATURE_SETS)}")
    if set(d.split_fractions) != {"train", "val", "test"}:
        raise ConfigError(f"data.split_fractions needs keys train, val, test; got {sorted(d.split_fractions)}")
    if any(v < 0 for v in d.split_fractions.values()) or abs(sum(d.split_fractions.values()) - 1) > 1e-6:
        raise ConfigError(f"data.split_fractions must be >= 0 and sum to 1, got {d.split_fractions}")
    _positive("data.jets_per_class", d.jets_per_class)
    _positive("data.tasks_per_class", d.tasks_per_class)
    _positive("data.max_constituents", d.max_constituents)
    _positive("data.files_per_split", d.files_per_split)
    _positive("data.mass_bins", d.mass_bins)
    if not d.aux_mass_columns or len(set(d.aux_mass_columns)) != len(d.aux_mass_columns):
        raise ConfigError(f"data.aux_mass_columns must list distinct columns, got {d.aux_mass_columns}")
    if unknown := [c for c in d.aux_mass_columns if c not in AUX_MASS_COLUMNS]:
        raise ConfigError(f"data.aux_mass_columns: {unknown} not in {list(AUX_MASS_COLUMNS)}")
    d.mass_window = _mass_window("data.mass_window", d.mass_window)
    if d.reader not in READERS:
        raise ConfigError(f"data.reader must be one of {list(READERS)}, got {d.reader!r}")


def check_model(m: ModelConfig, d: DataConfig) -> None:
    if m.k_neighbours < 1 or m.k_neighbours > d.max_constituents:
        raise ConfigError(
            f"model.k_neighbours must be in [1, data.max_constituents={d.max_constituents}], got {m.k_neighbours}"
        )
    if m.n_clusters < 2:
        raise ConfigError(f"model.n_clusters must be >= 2 (one cluster is no clustering), got {m.n_clusters}")
    if m.embedding_dim < 0:
        raise ConfigError(f"model.embedding_dim must be >= 0 (0: n_clusters), got {m.embedding_dim}")
    if m.embedding_pooling not in EMBEDDING_POOLINGS:
        raise ConfigError(
            f"model.embedding_pooling must be one of {list(EMBEDDING_POOLINGS)}, got {m.embedding_pooling!r}"
        )
    if m.particle_layout not in PARTICLE_LAYOUTS:
        raise ConfigError(f"model.particle_layout must be one of {list(PARTICLE_LAYOUTS)}, got {m.particle_layout!r}")
    if not 0.0 <= m.aux_dropout < 1.0:
        raise ConfigError(f"model.aux_dropout must be in [0, 1), got {m.aux_dropout}")


def check_loss(lo: LossConfig) -> None:
    if lo.clustering_reduction not in ("sum", "mean"):
        raise ConfigError(f"loss.clustering_reduction must be 'sum' or 'mean', got {lo.clustering_reduction!r}")
    for name in ("focal_gamma", "alpha_start", "alpha_step", *(term.weight for term in LOSS_TERMS.values())):
        if getattr(lo, name) < 0:
            raise ConfigError(f"loss.{name} must be >= 0, got {getattr(lo, name)}")
    if not 0.0 <= lo.focal_epsilon < 0.1:
        raise ConfigError(f"loss.focal_epsilon must be in [0, 0.1) (as run: 1e-9; 0: exact), got {lo.focal_epsilon}")
    _non_negative("loss.alpha_every_jets", lo.alpha_every_jets, "0: once per epoch")
    if lo.assignment not in ASSIGNMENTS:
        raise ConfigError(f"loss.assignment must be one of {list(ASSIGNMENTS)}, got {lo.assignment!r}")
    _positive("loss.sinkhorn_iterations", lo.sinkhorn_iterations)


def check_train(t: TrainConfig, m: ModelConfig) -> None:
    _positive("train.epochs", t.epochs)
    _location("train.init_from", t.init_from)
    if not 0 <= t.pretrain_epochs <= t.epochs:
        raise ConfigError(f"train.pretrain_epochs must be in [0, train.epochs={t.epochs}], got {t.pretrain_epochs}")
    _positive("train.batch_size", t.batch_size)
    _positive("train.learning_rate", t.learning_rate)
    if not 0.0 <= t.min_cluster_fraction < 1.0 / m.n_clusters:
        raise ConfigError(
            f"train.min_cluster_fraction must be in [0, 1/model.n_clusters), got {t.min_cluster_fraction}"
        )
    _positive("train.lr_halve_every", t.lr_halve_every)
    _positive("train.bn_momentum_halve_every", t.bn_momentum_halve_every)
    _positive("train.kmeans_max_jets", t.kmeans_max_jets)
    _non_negative("train.steps_per_epoch", t.steps_per_epoch)
    if t.centroid_update not in CENTROID_UPDATES:
        raise ConfigError(f"train.centroid_update must be one of {list(CENTROID_UPDATES)}, got {t.centroid_update!r}")
    _positive("train.centroid_learning_rate", t.centroid_learning_rate)
    if not 0.0 <= t.centroid_decay < 1.0:
        raise ConfigError(f"train.centroid_decay must be in [0, 1), got {t.centroid_decay}")
    _non_negative("train.validate_every_steps", t.validate_every_steps, "0: at epoch ends only")
    if t.stop_rule not in STOP_RULES:
        raise ConfigError(f"train.stop_rule must be one of {list(STOP_RULES)}, got {t.stop_rule!r}")
    _positive("train.stop_tolerance", t.stop_tolerance)
    _positive("train.stop_patience", t.stop_patience)
    _non_negative("train.stop_min_clustering_steps", t.stop_min_clustering_steps, "0: from the first point")
    _non_negative("train.epoch_eval_max_jets", t.epoch_eval_max_jets)
    if not 0 < t.lr_floor <= t.learning_rate:
        raise ConfigError(f"train.lr_floor must be in (0, train.learning_rate={t.learning_rate}], got {t.lr_floor}")
    if not 0.0 <= t.bn_momentum_start <= t.bn_momentum_max < 1.0:
        raise ConfigError(
            "train.bn_momentum_start <= train.bn_momentum_max < 1 is required, got "
            f"{t.bn_momentum_start} and {t.bn_momentum_max}"
        )


def check_run(r: RunConfig) -> None:
    _positive("run.num_proc", r.num_proc)
    _location("run.output", r.output)
    if r.launcher not in LAUNCHERS:
        raise ConfigError(f"run.launcher must be one of {list(LAUNCHERS)}, got {r.launcher!r}")
    _positive("run.collective_timeout_seconds", r.collective_timeout_seconds)
    _non_negative("run.rank_memory_limit_mb", r.rank_memory_limit_mb)


def check_evaluate(e: EvaluateConfig) -> None:
    if not e.splits or any(s not in SPLITS for s in e.splits) or len(set(e.splits)) != len(e.splits):
        raise ConfigError(f"evaluate.splits must list distinct splits among {list(SPLITS)}, got {e.splits}")
    _positive("evaluate.batch_size", e.batch_size)
    _positive("evaluate.plot_jets", e.plot_jets)
    if e.table_mode not in ("append", "overwrite"):
        raise ConfigError(f"evaluate.table_mode must be append or overwrite, got {e.table_mode!r}")


def check_pipeline(p: PipelineConfig) -> None:
    _location("pipeline.root", p.root)
    _location("pipeline.input", p.input)
    if p.input_format not in SOURCES:
        raise ConfigError(f"pipeline.input_format must be one of {list(SOURCES)}, got {p.input_format!r}")
    if p.input and p.input_table:
        raise ConfigError("pipeline.input and pipeline.input_table are two sources: set one of them")


def check_tracking(t: TrackingConfig) -> None:
    if t.register_as and (t.register_as != t.register_as.strip() or not all(t.register_as.split("."))):
        raise ConfigError(f"tracking.register_as must be a model name (e.g. ucluster or main.hep.ucluster), got "
                          f"{t.register_as!r}")  # fmt: skip


def _mass_window(name: str, window: list) -> list[float]:
    """``[]`` or ``[LO, HI]`` with LO < HI, as floats (so [10, 200] and [10.0, 200.0] are one setting)."""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in window)
    if window and (len(window) != 2 or not numbers or not window[0] < window[1]):
        raise ConfigError(f"{name} must be [LO, HI] with LO < HI (GeV), or [] for no cut; got {window}")
    return [float(v) for v in window]


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


def _non_negative(name: str, value: float, zero_means: str = "0: no limit") -> None:
    if not value >= 0:
        raise ConfigError(f"{name} must be >= 0 ({zero_means}), got {value!r}")
