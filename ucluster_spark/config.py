"""One typed configuration for every stage, loaded from ``conf/*.yaml`` and overridable as ``section.key=value``.

Only plain dicts (``to_dict``) travel to executors; ``from_dict`` rebuilds the object there.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ucluster_spark.schema import AUX_MASS_COLUMNS, FEATURE_SETS, KNOWN_CLASSES, SPLITS


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the key and the value."""


@dataclass
class DataConfig:
    """Where the jets come from and how they are laid out."""

    path: str = ""
    """Prepared dataset directory (parquet). Empty: generate a small Pythia sample into ``generated_root``."""
    generated_root: str = "data/generated"
    """Cache of generated datasets, one sub-directory per generation setting (reused when complete)."""
    classes: list[str] = field(default_factory=lambda: ["w", "z", "t"])
    jets_per_class: int = 1000
    generation_seed: int = 1
    tasks_per_class: int = 2
    """Spark tasks (each with its own Pythia seed) per class when generating."""
    max_constituents: int = 100
    feature_set: str = "ucluster8"
    split_fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.7, "val": 0.1, "test": 0.2})
    files_per_split: int = 4
    """Parquet files per split; each rank reads whole row groups, so keep this >= the number of ranks."""
    mass_bin_edges_max: float = 200.0
    mass_bins: int = 20
    """Auxiliary target: jet mass in ``mass_bins`` classes, edges ``linspace(0, max, mass_bins)`` + overflow."""
    aux_mass_columns: list[str] = field(default_factory=lambda: ["mass"])
    """Columns binned as auxiliary targets, each a focal-loss output of the head on z: ``[mass]`` is the original;
    ``sd_mass`` is the groomed mass (at particle level the plain mass also carries the underlying event). The aux
    loss is the mean over targets. Every listed column must be filled for every jet."""


@dataclass
class ModelConfig:
    """ABCnet sizes (defaults: the values of the original UCluster jet model)."""

    k_neighbours: int = 10
    gap1_features: int = 16
    mlp1: list[int] = field(default_factory=lambda: [64, 128])
    gap2_features: int = 128
    mlp2: list[int] = field(default_factory=lambda: [256, 256])
    n_clusters: int = 3
    """Clusters, and the dimension of the embedding z (as in the original, one dimension per cluster)."""
    embedding_pooling: str = "mean"
    aux_hidden: list[int] = field(default_factory=lambda: [256, 128])
    aux_dropout: float = 0.1
    batch_norm_momentum: float = 0.9


@dataclass
class LossConfig:
    """L = focal(aux) + beta * L_clust, with the soft assignment hardened by alpha(epoch)."""

    focal_gamma: float = 4.0
    clustering_weight: float = 10.0
    clustering_reduction: str = "sum"
    """``sum``: per-jet clustering losses summed over the rank's batch (the original's effective weighting,
    beta x batch size against the batch-mean focal loss); ``mean``: averaged like the focal loss."""
    alpha0: float = 5.0
    """alpha = alpha0 * (epoch - pretrain_epochs + 1) once the clustering loss is on."""


@dataclass
class TrainConfig:
    """Schedule and optimisation."""

    epochs: int = 200
    pretrain_epochs: int = 20
    batch_size: int = 512
    """Per rank; the global batch is batch_size x num_proc (logged)."""
    learning_rate: float = 1e-3
    scale_lr_by_workers: bool = False
    """Multiply the learning rate by num_proc (the usual rule when the global batch grows)."""
    lr_halve_every_samples: int = 500_000
    lr_floor: float = 1e-5
    shuffle_buffer: int = 2048
    seed: int = 7
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    kmeans_max_jets: int = 200_000
    """Centroid initialisation: k-means on at most this many training embeddings, gathered from all ranks."""


@dataclass
class RunConfig:
    """How the job is launched and where it writes."""

    num_proc: int = 2
    output: str = ""
    """Run directory. Empty: ``runs/<UTC timestamp>``."""
    use_gloo: bool = True
    start_timeout: int = 600
    failure_grace_seconds: float = 60.0
    """After the first rank fails, how long the others get to exit by themselves (their collectives fail at once if
    the peer died, after HOROVOD_GLOO_TIMEOUT_SECONDS, default 30, if it froze) before the driver stops them all."""
    horovod_cycle_time_ms: float = 5.0
    """Horovod's background loop wakes up this often to negotiate collectives (its own default is 1 ms). Each
    wake-up costs CPU; with steps of ~1 s, 5 ms adds < 1 % latency and leaves the cores to TensorFlow. GPU steps
    take milliseconds: use 1 there."""
    bind_ranks_to_cores: bool = False
    """Bind each rank's threads to its own share of the cores it may use (as ``mpirun --bind-to core``): for
    executors running several ranks with no core to spare. Off on clusters whose executors share cores."""
    verbose: int = 1
    spark_conf: dict[str, str] = field(default_factory=dict)


@dataclass
class EvaluateConfig:
    """Cluster assignment of a dataset with a trained model (``jobs/evaluate.py``) and the plots."""

    splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])
    """Splits of the dataset to assign (those with jets); metrics are given for all of them together and each."""
    batch_size: int = 1024
    """Jets per forward pass inside an executor (inference only: larger than training batches)."""
    plot_jets: int = 5000
    """Jets in the embedding scatter plot (a sample; every other plot and metric uses every jet)."""


@dataclass
class PipelineConfig:
    """The scheduled step ``jobs/pipeline.py``: data -> train -> evaluate under ``root/<run id>/``."""

    root: str = "pipelines"
    hls4ml_input: str = ""
    """Glob(s) of hls4ml HDF5 files to prepare. Empty: use ``data.path`` if set, else generate with Pythia."""
    mass_window: list[float] = field(default_factory=list)
    """[LO, HI] GeV applied when preparing hls4ml files (the paper: [10, 200]); empty: no cut."""
    drop_bad_jets: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<dict>") -> Config:
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(sections))
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {unknown}; expected some of {sorted(sections)}")
        built = {}
        for f in dataclasses.fields(cls):
            section_cls = f.default_factory().__class__  # type: ignore[misc]
            values = raw.get(f.name) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: section '{f.name}' must be a mapping, got {values!r}")
            built[f.name] = _build_section(section_cls, values, f"{source}: {f.name}")
        config = cls(**built)
        config.validate()
        return config

    def dump(self, path: str | Path) -> None:
        from ucluster_spark import store

        store.atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def validate(self) -> None:
        d, m, lo, t, r = self.data, self.model, self.loss, self.train, self.run
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
        if m.k_neighbours < 1 or m.k_neighbours > d.max_constituents:
            raise ConfigError(
                f"model.k_neighbours must be in [1, data.max_constituents={d.max_constituents}], got {m.k_neighbours}"
            )
        _positive("model.n_clusters", m.n_clusters)
        if m.embedding_pooling not in ("mean", "max"):
            raise ConfigError(f"model.embedding_pooling must be 'mean' or 'max', got {m.embedding_pooling!r}")
        if lo.clustering_reduction not in ("sum", "mean"):
            raise ConfigError(f"loss.clustering_reduction must be 'sum' or 'mean', got {lo.clustering_reduction!r}")
        _positive("train.epochs", t.epochs)
        if not 0 <= t.pretrain_epochs <= t.epochs:
            raise ConfigError(f"train.pretrain_epochs must be in [0, train.epochs={t.epochs}], got {t.pretrain_epochs}")
        _positive("train.batch_size", t.batch_size)
        _positive("run.num_proc", r.num_proc)
        e, p = self.evaluate, self.pipeline
        if not e.splits or any(s not in SPLITS for s in e.splits) or len(set(e.splits)) != len(e.splits):
            raise ConfigError(f"evaluate.splits must list distinct splits among {list(SPLITS)}, got {e.splits}")
        _positive("evaluate.batch_size", e.batch_size)
        _positive("evaluate.plot_jets", e.plot_jets)
        if p.mass_window and (len(p.mass_window) != 2 or not p.mass_window[0] < p.mass_window[1]):
            raise ConfigError(f"pipeline.mass_window must be [LO, HI] with LO < HI (GeV), got {p.mass_window}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


def _build_section(section_cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(section_cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    default = section_cls()
    kwargs = {}
    for name, value in values.items():
        expected = getattr(default, name)
        kwargs[name] = _coerce(value, expected, f"{where}.{name}")
    return section_cls(**kwargs)


def _coerce(value: Any, expected: Any, where: str) -> Any:
    """Accept the YAML value when it has the default's type (ints widen to floats)."""
    if isinstance(expected, bool):
        ok = isinstance(value, bool)
    elif isinstance(expected, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(expected, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(expected, str):
        ok = isinstance(value, str)
    elif isinstance(expected, list):
        ok = isinstance(value, list)
    elif isinstance(expected, dict):
        ok = isinstance(value, dict)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where}: expected {type(expected).__name__}, got {value!r}")
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` with the value parsed as YAML (``3``, ``true``, ``[w,z]``, ``0.5``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {text!r}: the key must be section.key, e.g. train.epochs=5")
    return parts, yaml.safe_load(raw) if raw.strip() else ""


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then ``section.key=value`` overrides, then validation."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for item in overrides or []:
        (section, key), value = parse_override(item)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{source}: section '{section}' must be a mapping")
        raw[section][key] = value
    return Config.from_dict(raw, source)
