"""The jet source for a user's own ROOT n-tuples: one TTree entry per jet, the particles as jagged branches, the
class as an integer branch, every name given by the ``data.ntuple`` mapping (docs/data.md):

    data:
      ntuple:
        tree: Events
        particles: [pf_pt, pf_eta, pf_phi, pf_e]   # four jagged branches, in the order `momenta` names
        momenta: pt_eta_phi_e                      # or px_py_pz_e
        jet: [fj_pt, fj_eta, fj_phi, fj_e]         # optional; default: the sum of the particles
        jet_momenta: pt_eta_phi_e                  # the jet's convention, if not the particles'
        label: fj_label                            # an integer branch ...
        label_values: {w: 1, z: 2, t: 3}           # ... and the value of each class in data.classes
        columns: {sd_mass: fj_sdmass}              # optional: sd_mass, tau21, tau32 from branches

Read with uproot in the executors, ``ENTRIES_PER_TASK`` entries per task; the driver reads only the branch list and
the entry count. A jet whose label is none of ``label_values`` is of a class not asked for (left out and counted).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from ucluster_spark import schema
from ucluster_spark.config import DataConfig
from ucluster_spark.data.formats.root import branch_names, padded, particle_counts, read_branches, scalar
from ucluster_spark.data.rows import RowFilter, jet_kinematics, kept_jets
from ucluster_spark.data.sources import FileSource
from ucluster_spark.errors import ConfigError, InputFileError

ENTRIES_PER_TASK = 20_000
MOMENTA = ("px_py_pz_e", "pt_eta_phi_e")
SHAPE_COLUMNS = (schema.SD_MASS, schema.TAU21, schema.TAU32)


@dataclass(frozen=True)
class TreeMapping:
    """``data.ntuple``, checked: which branch holds what."""

    tree: str
    particles: list[str]
    label: str
    label_values: dict[str, int]
    momenta: str = "px_py_pz_e"
    jet: list[str] = field(default_factory=list)
    jet_momenta: str = ""
    columns: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, raw: dict[str, Any], classes: list[str]) -> TreeMapping:
        """Raises ConfigError naming the ``data.ntuple`` key at fault."""
        known = [f.name for f in fields(cls)]
        if not raw:
            raise ConfigError("data.ntuple: the ntuple format needs a mapping of branch names (docs/data.md)")
        if unknown := sorted(set(raw) - set(known)):
            raise ConfigError(f"data.ntuple.{unknown[0]}: unknown key; expected some of {known}")
        if missing := [k for k in ("tree", "particles", "label", "label_values") if not raw.get(k)]:
            raise ConfigError(f"data.ntuple.{missing[0]}: required")
        types = {"tree": str, "particles": list, "label": str, "label_values": dict, "momenta": str, "jet": list,
                 "jet_momenta": str, "columns": dict}  # fmt: skip
        if wrong := [k for k, v in raw.items() if not isinstance(v, types[k])]:
            raise ConfigError(f"data.ntuple.{wrong[0]}: expected {types[wrong[0]].__name__}, got {raw[wrong[0]]!r}")
        mapping = cls(**raw)
        for key in ("particles", "jet"):
            names = getattr(mapping, key)
            if names and (len(names) != 4 or not all(isinstance(n, str) and n for n in names)):
                raise ConfigError(f"data.ntuple.{key}: four branch names ({mapping.momenta}), got {names!r}")
        for key in ("momenta", "jet_momenta"):
            if getattr(mapping, key) not in (*MOMENTA, "" if key == "jet_momenta" else None):
                raise ConfigError(f"data.ntuple.{key}: {getattr(mapping, key)!r} is not one of {list(MOMENTA)}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in mapping.label_values.values()):
            raise ConfigError(f"data.ntuple.label_values: class -> integer label, got {mapping.label_values!r}")
        if unlabelled := [c for c in classes if c not in mapping.label_values]:
            raise ConfigError(f"data.ntuple.label_values: no value for class {unlabelled[0]!r} of data.classes")
        if len(set(mapping.label_values.values())) != len(mapping.label_values):
            raise ConfigError(f"data.ntuple.label_values: two classes share a value: {mapping.label_values}")
        if unknown := sorted(set(mapping.columns) - set(SHAPE_COLUMNS)):
            raise ConfigError(f"data.ntuple.columns: {unknown[0]!r} is not one of {list(SHAPE_COLUMNS)}")
        return mapping

    def branches(self) -> list[str]:
        return [*self.particles, *self.jet, self.label, *self.columns.values()]


def _momenta(values: np.ndarray, momenta: str) -> np.ndarray:
    """(..., 4) in ``momenta``'s convention -> (..., 4) px, py, pz, E."""
    if momenta == "px_py_pz_e":
        return values
    pt, eta, phi, energy = np.moveaxis(values, -1, 0)
    return np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), energy], axis=-1)


def inspect_ntuple(path: str, data: DataConfig) -> dict[str, Any]:
    """Driver side: the mapping checked against the file's branches, from its metadata only."""
    mapping = TreeMapping.from_config(data.ntuple, list(data.classes))
    names, n_jets = branch_names(path, mapping.tree)
    if missing := [b for b in mapping.branches() if b not in names]:
        raise InputFileError(f"{path}: TTree '{mapping.tree}' lacks branch '{missing[0]}' (named in data.ntuple)")
    return {"path": path, "n_jets": n_jets}


def read_ntuple_entries(
    path: str, start: int, stop: int, data: DataConfig, drop_bad_jets: bool
) -> tuple[pd.DataFrame, Counter]:
    """Entries [start, stop) as jets in the dataset schema, and the jets left out by why."""
    mapping, classes = TreeMapping.from_config(data.ntuple, list(data.classes)), list(data.classes)
    arrays = read_branches(path, mapping.tree, mapping.branches(), start, stop)
    counts = particle_counts(arrays, mapping.particles, path, start)
    labels = scalar(arrays, mapping.label)
    class_of_value = {value: name for name, value in mapping.label_values.items()}
    class_of_jet = np.array([class_of_value.get(int(v), "") if np.isfinite(v) else "" for v in labels], dtype=object)
    selection = RowFilter(path, start, stop, class_of_jet, classes, drop_bad_jets, unit="entry", units="entries")

    width = max(int(counts.max(initial=0)), 1)
    real = np.arange(width)[None, :] < counts[:, None]
    raw = np.stack([padded(arrays[b], width) for b in mapping.particles], axis=-1)  # (N, width, 4)
    for branch, values in zip(mapping.particles, np.moveaxis(raw, -1, 0), strict=True):
        selection.non_finite(f"branch '{branch}'", values)
    p4 = np.where(real[..., None], _momenta(np.nan_to_num(raw), mapping.momenta), 0.0)
    selection.no_constituents(counts, f"'{mapping.particles[0]}' is empty")
    selection.unphysical_particles(p4, real, f"branches {mapping.particles}")
    if mapping.jet:
        given = np.stack([scalar(arrays, b) for b in mapping.jet], axis=1)
        for branch, values in zip(mapping.jet, given.T, strict=True):
            selection.non_finite(f"branch '{branch}'", values)
        jet_p4 = _momenta(np.nan_to_num(given), mapping.jet_momenta or mapping.momenta)
    else:
        jet_p4 = p4.sum(axis=1)
    jet = jet_kinematics(jet_p4)
    selection.mass_window(jet[schema.MASS], data.mass_range)
    columns = {column: scalar(arrays, branch) for column, branch in mapping.columns.items()}
    return kept_jets(selection, class_of_jet, p4, real, counts, jet, data, columns)


class NtupleSource(FileSource):
    """A user's ROOT n-tuples, read through the ``data.ntuple`` mapping, ``ENTRIES_PER_TASK`` entries per task."""

    name = "ntuple"
    files = "*.root"
    rows_per_task = ENTRIES_PER_TASK

    @staticmethod
    def inspect(path: str, data: DataConfig) -> dict[str, Any]:
        return inspect_ntuple(path, data)

    @staticmethod
    def read_rows(
        layout: dict[str, Any], start: int, stop: int, data: DataConfig, drop_bad_jets: bool
    ) -> tuple[pd.DataFrame, Counter]:
        return read_ntuple_entries(layout["path"], start, stop, data, drop_bad_jets)
