"""The jet source for files in the public hls4ml LHC-jet HDF5 layout: per jet a ``jetConstituentList`` of particle
features and a ``jets`` row of jet features, each with its list of column names.

Columns are looked up by name (``particleFeatureNames``, ``jetFeatureNames``), never by position: files made by
other tools carry a subset of the columns, in another order. ``inspect_file`` checks a file's structure (cheap:
metadata only) and runs on the driver before any Spark work; ``read_slice`` runs inside executors and reads one
slice of rows at a time, so memory is bounded by the slice size.

Bad input policy: structural problems (missing dataset or column, wrong rank, labels that are not one-hot) always
fail the job. Per-jet value problems (NaN/inf in a used column, a jet with no constituents) fail by default; with
``drop_bad_jets`` such jets are dropped and counted instead.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ucluster_spark import schema
from ucluster_spark.config import DataConfig
from ucluster_spark.data.rows import RowFilter, jets_frame
from ucluster_spark.data.sources import FileSource
from ucluster_spark.errors import InputFileError

CONSTITUENTS_DATASET = "jetConstituentList"
PARTICLE_NAMES_DATASET = "particleFeatureNames"
JETS_DATASET = "jets"
JET_NAMES_DATASET = "jetFeatureNames"
CLASS_COLUMNS = {name: f"j_{name}" for name in schema.KNOWN_CLASSES}
PARTICLE_PT = "j1_pt"
# The model features from hls4ml constituent columns: (column, take the log).
HLS4ML_FEATURES: dict[str, tuple[str, bool]] = {
    "etarel": ("j1_etarel", False),
    "phirel": ("j1_phirel", False),
    "log_ptrel": ("j1_ptrel", True),
    "deltaR": ("j1_deltaR", False),
    "log_e": ("j1_e", True),
    "log_erel": ("j1_erel", True),
    "log_pt": ("j1_pt", True),
    "costhetarel": ("j1_costhetarel", False),
}
REQUIRED_JET_COLUMNS = ("j_pt", "j_eta", "j_mass")
OPTIONAL_JET_COLUMNS = {
    schema.PHI: "j_phi",
    schema.SD_MASS: "j_mass_mmdt",
    schema.TAU21: "j_tau21_b1",
    schema.TAU32: "j_tau32_b1",
}
ROWS_PER_TASK = 2500
"""hls4ml files hold 10,000 jets: four tasks per file keep both cores busy and bound each task's memory."""


@dataclass(frozen=True)
class FileLayout:
    """Where the needed columns sit in one file."""

    path: str
    n_jets: int
    n_slots: int
    particle_index: dict[str, int]
    jet_index: dict[str, int]


def _names(handle, dataset: str, path: str, width: int) -> list[str]:
    raw = handle[dataset][()]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(raw).ravel()]
    if len(names) < width:
        raise InputFileError(f"{path}: '{dataset}' names {len(names)} columns but the data has {width}")
    # particleFeatureNames carries a trailing 'j1_pdgid' with no column: only the first `width` names count.
    return names[:width]


def inspect_file(path: str, classes: list[str], feature_set: str) -> FileLayout:
    """Open ``path`` and check everything structural; raises InputFileError naming what is wrong."""
    import h5py

    if not Path(path).is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise InputFileError(f"{path}: not a readable HDF5 file ({err})") from err
    with handle:
        for dataset in (CONSTITUENTS_DATASET, PARTICLE_NAMES_DATASET, JETS_DATASET, JET_NAMES_DATASET):
            if dataset not in handle:
                raise InputFileError(f"{path}: dataset '{dataset}' is missing (has: {sorted(handle.keys())})")
        constituents, jets = handle[CONSTITUENTS_DATASET], handle[JETS_DATASET]
        if constituents.ndim != 3:
            raise InputFileError(
                f"{path}: '{CONSTITUENTS_DATASET}' must be 3-D (jets, particles, features), "
                f"got shape {constituents.shape}"
            )
        if jets.ndim != 2:
            raise InputFileError(f"{path}: '{JETS_DATASET}' must be 2-D (jets, features), got shape {jets.shape}")
        if constituents.shape[0] != jets.shape[0]:
            raise InputFileError(
                f"{path}: '{CONSTITUENTS_DATASET}' has {constituents.shape[0]} jets but '{JETS_DATASET}' "
                f"has {jets.shape[0]}"
            )
        particle_names = _names(handle, PARTICLE_NAMES_DATASET, path, constituents.shape[2])
        jet_names = _names(handle, JET_NAMES_DATASET, path, jets.shape[1])
    needed_particle = {PARTICLE_PT} | {HLS4ML_FEATURES[f][0] for f in schema.feature_names(feature_set)}
    needed_jet = set(REQUIRED_JET_COLUMNS) | {CLASS_COLUMNS[c] for c in classes}
    for dataset, needed, names in (
        (PARTICLE_NAMES_DATASET, needed_particle, particle_names),
        (JET_NAMES_DATASET, needed_jet, jet_names),
    ):
        missing = sorted(needed - set(names))
        if missing:
            raise InputFileError(f"{path}: '{dataset}' lacks column(s) {missing}")
    class_columns = [CLASS_COLUMNS[c] for c in schema.KNOWN_CLASSES if CLASS_COLUMNS[c] in jet_names]
    wanted_jet = set(REQUIRED_JET_COLUMNS) | set(OPTIONAL_JET_COLUMNS.values()) | set(class_columns)
    return FileLayout(
        path=path,
        n_jets=int(constituents.shape[0]),
        n_slots=int(constituents.shape[1]),
        particle_index={n: i for i, n in enumerate(particle_names) if n in needed_particle},
        jet_index={n: i for i, n in enumerate(jet_names) if n in wanted_jet},
    )


def read_slice(
    layout: FileLayout,
    start: int,
    stop: int,
    classes: list[str],
    feature_set: str,
    max_constituents: int,
    mass_window: tuple[float, float] | None,
    drop_bad_jets: bool,
) -> tuple[pd.DataFrame, Counter]:
    """Rows [start, stop) of one file as jets in the dataset schema, plus counts of what was dropped and why."""
    import h5py

    path = layout.path
    with h5py.File(path, "r") as handle:
        particles = handle[CONSTITUENTS_DATASET][start:stop]
        jets = handle[JETS_DATASET][start:stop]
    jet_col = {name: jets[:, i].astype(np.float64) for name, i in layout.jet_index.items()}
    part_col = {name: particles[:, :, i].astype(np.float64) for name, i in layout.particle_index.items()}

    # Labels: exactly one of the class columns is 1 (structural: always fails).
    all_classes = [c for c in schema.KNOWN_CLASSES if CLASS_COLUMNS[c] in jet_col]
    onehot = np.stack([jet_col[CLASS_COLUMNS[c]] for c in all_classes], axis=1)
    is_onehot = np.all((onehot == 0) | (onehot == 1), axis=1) & (onehot.sum(axis=1) == 1)
    if not is_onehot.all():
        row = start + int(np.flatnonzero(~is_onehot)[0])
        raise InputFileError(
            f"{path}: '{JETS_DATASET}' row {row}: class columns {[CLASS_COLUMNS[c] for c in all_classes]} "
            f"are not one-hot: {onehot[row - start].tolist()}"
        )
    class_of_jet = np.array(all_classes)[onehot.argmax(axis=1)]
    selection = RowFilter(path, start, stop, class_of_jet, classes, drop_bad_jets, unit="jet")
    for column, values in jet_col.items():
        if column in REQUIRED_JET_COLUMNS:
            selection.non_finite(f"'{JETS_DATASET}' column '{column}'", values)
    for column, values in part_col.items():
        selection.non_finite(f"'{CONSTITUENTS_DATASET}' column '{column}'", values)
    pt = np.nan_to_num(part_col[PARTICLE_PT], nan=0.0)
    real = pt > 0
    counts = real.sum(axis=1)
    selection.no_constituents(counts, f"every {PARTICLE_PT} in '{CONSTITUENTS_DATASET}' is 0")
    selection.mass_window(jet_col["j_mass"], mass_window)

    rows = selection.rows
    # pT-ordered, truncated to max_constituents; padded slots exactly zero (no log of 0).
    order = np.argsort(-pt[rows], axis=1, kind="stable")[:, :max_constituents]
    is_real = np.take_along_axis(real[rows], order, axis=1)
    columns = []
    for name in schema.feature_names(feature_set):
        column, take_log = HLS4ML_FEATURES[name]
        values = np.take_along_axis(part_col[column][rows], order, axis=1)
        if take_log:
            values = np.log(np.where(is_real, values, 1.0))
        columns.append(np.where(is_real, values, 0.0))
    features = np.zeros((len(rows), max_constituents, len(columns)), np.float32)
    features[:, : order.shape[1]] = np.stack(columns, axis=-1)
    jet_columns = {schema.PT: jet_col["j_pt"], schema.ETA: jet_col["j_eta"], schema.MASS: jet_col["j_mass"]}
    jet_columns |= {column: jet_col.get(source) for column, source in OPTIONAL_JET_COLUMNS.items()}
    frame = jets_frame(path, start, rows, class_of_jet, classes, features, counts[rows], jet_columns)
    return frame, selection.dropped


class Hls4mlSource(FileSource):
    """Files in the hls4ml layout, ``ROWS_PER_TASK`` rows per task."""

    name = "hls4ml"
    files = "*.h5"
    rows_per_task = ROWS_PER_TASK

    @staticmethod
    def inspect(path: str, data: DataConfig) -> dict[str, Any]:
        return asdict(inspect_file(path, data.classes, data.feature_set))

    @staticmethod
    def read_rows(
        layout: dict[str, Any], start: int, stop: int, data: DataConfig, drop_bad_jets: bool
    ) -> tuple[pd.DataFrame, Counter]:
        return read_slice(FileLayout(**layout), start, stop, list(data.classes), data.feature_set,
                          data.max_constituents, data.mass_range, drop_bad_jets)  # fmt: skip
