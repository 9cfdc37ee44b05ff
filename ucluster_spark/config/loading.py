"""The whole configuration (``Config``): built from plain dicts (what travels to executors), from ``conf/*.yaml``,
``section.key=value`` overrides and typed command-line flags, then checked against ``rules.py``."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ucluster_spark import store
from ucluster_spark.config.rules import (
    check_data,
    check_evaluate,
    check_loss,
    check_model,
    check_pipeline,
    check_run,
    check_tracking,
    check_train,
)
from ucluster_spark.config.sections import (
    SECTION_CLASSES,
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

_KEY_MENTION = re.compile(rf"\b((?:{'|'.join(SECTION_NAMES)})\.[a-z_0-9]+)")

RETIRED_KEYS = {("run", "use_gloo"): (True, "Gloo is always Horovod's controller here (horovod is built without MPI)")}
"""Settings that earlier versions wrote into every run's config.yaml and that are gone: dropped when they hold the one
value they could take, so those runs still load (evaluate, export, --resume); any other value is refused, saying why."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<dict>", scope: str = "all") -> Config:
        """``scope="data"`` checks only what the data jobs use (a model setting cannot refuse a dataset)."""
        try:
            return cls._build(raw, scope)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def _build(cls, raw: dict[str, Any], scope: str) -> Config:
        unknown = sorted(set(raw) - set(SECTION_NAMES))
        if unknown:
            raise ConfigError(
                f"section '{unknown[0]}': unknown section(s) {unknown}; expected some of {sorted(SECTION_NAMES)}"
            )
        raw = _without_retired_keys(raw)
        built = {}
        for name in SECTION_NAMES:
            values = raw.get(name) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"section '{name}' must be a mapping, got {values!r}")
            built[name] = _build_section(SECTION_CLASSES[name], values, name)
        config = cls(**built)
        config.validate(scope)
        return config

    def dump(self, path: str | Path) -> None:
        store.atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def validate(self, scope: str = "all") -> None:
        """The rules between settings (``rules.py``); ``scope="data"`` checks the data jobs' only."""
        check_data(self.data)
        if scope == "data":
            return
        check_model(self.model, self.data)
        check_loss(self.loss)
        check_train(self.train, self.model)
        check_run(self.run)
        check_evaluate(self.evaluate)
        check_pipeline(self.pipeline)
        check_tracking(self.tracking)


def _without_retired_keys(raw: dict[str, Any]) -> dict[str, Any]:
    raw = dict(raw)
    for (section, key), (only_value, why) in RETIRED_KEYS.items():
        values = raw.get(section)
        if isinstance(values, dict) and key in values:
            if values[key] != only_value:
                raise ConfigError(f"{section}.{key}={values[key]!r}: the setting was removed: {why}")
            raw[section] = {k: v for k, v in values.items() if k != key}
    return raw


def _build_section(section_cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(section_cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: unknown key(s) {unknown} in {where}; expected some of {sorted(known)}"
        )
    default = section_cls()
    kwargs = {}
    for name, value in values.items():
        expected = getattr(default, name)
        kwargs[name] = _coerce(value, expected, f"{where}.{name}")
    return section_cls(**kwargs)


def _yaml11_float(value: Any) -> Any:
    """YAML 1.1 (PyYAML) reads ``1e-5`` as a string (it wants ``1.0e-5``): a number written that way is still one."""
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
        return float(value)
    return value


def _coerce(value: Any, expected: Any, where: str) -> Any:
    """Accept the YAML value when it has the default's type (ints widen to floats)."""
    if isinstance(expected, bool):
        ok = isinstance(value, bool)
    elif isinstance(expected, float):
        value = _yaml11_float(value)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(expected, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(expected, str):
        ok = isinstance(value, str)
    elif isinstance(expected, list):
        ok = isinstance(value, list)
    else:  # every setting is a bool, number, string, list or dict
        ok = isinstance(value, dict)
    if not ok:
        raise ConfigError(f"{where}: expected {type(expected).__name__}, got {value!r}")
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value``: the value as YAML (``3``, ``true``, ``[w,z]``, ``0.5``), except for a key whose
    setting is a string, which takes the text as it is (``run.output=runs/a #1`` is that path, not ``runs/a``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {text!r}: the key must be section.key, e.g. train.epochs=5")
    if isinstance(_default(*parts), str) or not raw.strip():
        return parts, raw
    try:
        return parts, yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"override {text!r}: the value is not valid YAML") from None


def _default(section: str, key: str) -> Any:
    section_cls = SECTION_CLASSES.get(section)
    return getattr(section_cls(), key, None) if section_cls else None


Flags = dict[str, tuple[str, Any]]
"""Typed command-line flags: ``{"run.output": ("--output", "runs/a #1")}``, applied as they are."""


def load(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    flags: Flags | None = None,
    scope: str = "all",
) -> Config:
    """Defaults, then the YAML file, then ``section.key=value`` overrides, then typed flags, then validation.
    An error names where the offending value came from: the flag, the override or the file."""
    raw: dict[str, Any] = {}
    origin: dict[str, str] = {}
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
        for section, values in raw.items():
            origin[section] = source
            for key in values if isinstance(values, dict) else ():
                origin[f"{section}.{key}"] = source
    settings = [(item, *parse_override(item)) for item in overrides or []]
    settings += [(flag, dotted.split(".", 1), value) for dotted, (flag, value) in (flags or {}).items()]
    for where, (section, key), value in settings:
        where = where if where.startswith("--") else f"override {where!r}"
        raw.setdefault(section, {})
        origin.setdefault(section, where)
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{origin[section]}: section '{section}' must be a mapping")
        raw[section][key] = value
        origin[f"{section}.{key}"] = where
    try:
        return Config._build(raw, scope)
    except ConfigError as err:
        raise ConfigError(f"{_blame(str(err), origin, source)}: {err}") from None


def _blame(message: str, origin: dict[str, str], source: str) -> str:
    """Where the values a message is about were set (flags and overrides before the file; the file if none)."""
    mentioned = _KEY_MENTION.findall(message) or re.findall(r"section '(\w+)'", message)
    places = list(dict.fromkeys(origin[key] for key in mentioned if key in origin))
    return ", ".join(places) if places else source
