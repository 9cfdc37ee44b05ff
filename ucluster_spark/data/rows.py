"""Executor side: what every file layout does with the rows of one task once it has read them — which jets are
kept and why the others were dropped (the same rules and messages for every layout), and the dataset-schema frame
of the kept jets.

The rules: a jet of a class not asked for is left out; a NaN/inf value, a jet without constituents or one with a
particle of pT or E <= 0 fails the task naming the file, the column and the row, unless ``drop_bad_jets`` (then it
is dropped and counted); a jet outside ``data.mass_range`` is left out.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ucluster_spark import schema
from ucluster_spark.config import DataConfig
from ucluster_spark.data.features import padded_constituent_features
from ucluster_spark.errors import InputFileError


class RowFilter:
    """The jets of rows [start, stop) of one file that are kept, and counts of the others by why.

    ``unit``/``units`` are what the layout calls a row in its messages (``row``/``rows``, ``entry``/``entries``);
    a source whose rows have no stable number (a table) gives the jets' ``ids`` instead.
    """

    def __init__(self, path: str, start: int, stop: int, class_of_jet: np.ndarray, classes: list[str],
                 drop_bad_jets: bool, unit: str = "row", units: str = "rows",
                 ids: np.ndarray | None = None) -> None:  # fmt: skip
        self.path, self.start, self.stop, self.unit, self.units, self.ids = path, start, stop, unit, units, ids
        self.drop_bad_jets = drop_bad_jets
        self.keep = np.isin(class_of_jet, classes)
        self.dropped = Counter(dict.fromkeys(("outside_mass_window", "non_finite", "no_constituents", "unphysical"), 0))
        self.dropped["not_requested_class"] = int((~self.keep).sum())

    def _first(self, mask: np.ndarray) -> str:
        index = int(np.flatnonzero(mask)[0])
        return f"jet {self.ids[index]!r}" if self.ids is not None else f"{self.unit} {self.start + index}"

    def _span(self) -> str:
        return "this part of the input" if self.ids is not None else f"{self.units} {self.start}-{self.stop - 1}"

    def non_finite(self, where: str, values: np.ndarray) -> None:
        """Refuse (or drop) the kept jets whose ``values`` (one row per jet) hold NaN or inf; ``where`` names the
        column in the message."""
        bad = self.keep & ~np.isfinite(values).reshape(len(values), -1).all(axis=1)
        if not bad.any():
            return
        if not self.drop_bad_jets:
            raise InputFileError(
                f"{self.path}: {self._first(bad)} holds NaN or inf in {where} ({int(bad.sum())} such jets in "
                f"{self._span()}); fix the input or pass --drop-bad-jets"
            )
        self.dropped["non_finite"] += int(bad.sum())
        self.keep &= ~bad

    def no_constituents(self, counts: np.ndarray, why: str) -> None:
        """Refuse (or drop) the kept jets with no constituent; ``why`` says how the layout tells (e.g. "every E_i
        is 0")."""
        empty = self.keep & (counts == 0)
        if not empty.any():
            return
        if not self.drop_bad_jets:
            raise InputFileError(f"{self.path}: {self._first(empty)} has no constituents ({why}); pass "
                                 "--drop-bad-jets to drop such jets")  # fmt: skip
        self.dropped["no_constituents"] += int(empty.sum())
        self.keep &= ~empty

    def unphysical_particles(self, p4: np.ndarray, real: np.ndarray, where: str) -> None:
        """Refuse (or drop) the kept jets with a real particle of pT or E <= 0 in ``p4`` (N, particles, px/py/pz/E):
        its η and log pT / log E are undefined."""
        bad = self.keep & (real & ((np.hypot(p4[..., 0], p4[..., 1]) <= 0) | (p4[..., 3] <= 0))).any(axis=1)
        if not bad.any():
            return
        if not self.drop_bad_jets:
            raise InputFileError(f"{self.path}: {self._first(bad)} has a particle with pT or E <= 0 in "
                                 f"{where}; pass --drop-bad-jets to drop such jets")  # fmt: skip
        self.dropped["unphysical"] += int(bad.sum())
        self.keep &= ~bad

    def mass_window(self, mass: np.ndarray, window: tuple[float, float] | None) -> None:
        """Leave out the kept jets outside ``data.mass_range`` (none when it is unset)."""
        if window is None:
            return
        inside = (mass > window[0]) & (mass < window[1])
        self.dropped["outside_mass_window"] = int((self.keep & ~inside).sum())
        self.keep &= inside

    @property
    def rows(self) -> np.ndarray:
        """Indices (within the task) of the jets kept."""
        return np.flatnonzero(self.keep)


def jets_frame(
    path: str,
    start: int,
    rows: np.ndarray,
    class_of_jet: np.ndarray,
    classes: list[str],
    features: np.ndarray,
    counts: np.ndarray,
    columns: dict[str, np.ndarray | None],
) -> pd.DataFrame:
    """The kept ``rows`` as a frame in the dataset schema. ``features`` and ``counts`` are of the kept jets only;
    ``columns`` maps the other schema columns (pT, η, φ, mass, ...) to per-row values of the whole task; a column
    it leaves out (or maps to None) is null: the layout has none. A jet's ID is ``<file name>:<row in the file>``."""
    frame = pd.DataFrame(
        {
            schema.JET_ID: [f"{Path(path).name}:{start + r}" for r in rows],
            schema.LABEL: np.array([classes.index(c) for c in class_of_jet[rows]], dtype=np.int32),
            schema.LABEL_NAME: class_of_jet[rows],
            schema.N_CONSTITUENTS: counts.astype(np.int32),
            schema.CONSTITUENTS: list(features.reshape(len(rows), int(np.prod(features.shape[1:])))),
        }
    )
    if unknown := set(columns) - set(schema.COLUMNS):
        raise ValueError(f"not dataset columns: {sorted(unknown)}")
    for column in schema.COLUMNS:
        if column not in frame:
            values = columns.get(column)
            frame[column] = values[rows].astype(np.float32) if values is not None else None
    return frame[list(schema.COLUMNS)]


def jet_kinematics(jet_p4: np.ndarray) -> dict[str, np.ndarray]:
    """(N, 4) px, py, pz, E of the jets -> their pT, η, φ, mass (the schema's columns) and ``energy``."""
    px, py, pz, energy = np.moveaxis(np.asarray(jet_p4, np.float64), -1, 0)
    pt = np.hypot(px, py)
    return {
        schema.PT: pt,
        schema.ETA: np.arcsinh(np.divide(pz, pt, out=np.zeros_like(pz), where=pt > 0)),
        schema.PHI: np.arctan2(py, px),
        schema.MASS: np.sqrt(np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0)),
        "energy": energy,
    }


def kept_jets(
    selection: RowFilter,
    class_of_jet: np.ndarray,
    p4: np.ndarray,
    real: np.ndarray,
    counts: np.ndarray,
    jet: dict[str, np.ndarray],
    data: DataConfig,
    columns: dict[str, np.ndarray | None] | None = None,
) -> tuple[pd.DataFrame, Counter]:
    """The jets ``selection`` kept, in the dataset schema, and the counts of the others: the model's inputs from the
    particles' (N, particles, 4) px/py/pz/E ``p4`` around the ``jet`` (``jet_kinematics``), plus ``columns``."""
    rows = selection.rows
    axes = np.column_stack([jet[schema.PT], jet[schema.ETA], jet[schema.PHI], jet["energy"]])[rows]
    features = padded_constituent_features(p4[rows], real[rows], axes, data.max_constituents, data.feature_set)
    values = {k: jet[k] for k in (schema.PT, schema.ETA, schema.PHI, schema.MASS)} | (columns or {})
    frame = jets_frame(selection.path, selection.start, rows, class_of_jet, list(data.classes), features,
                       counts[rows], values)  # fmt: skip
    return frame, selection.dropped
