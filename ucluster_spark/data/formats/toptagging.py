"""The jet source for the top-tagging landscape files (Kasieczka, Plehn et al. 2019; train/val/test.h5 of the
"Machine Learning Landscape of Top Taggers"): a pandas DataFrame in HDF5 under the key ``table``, one row per jet
with the four-momenta of up to 200 constituents in columns ``E_i PX_i PY_i PZ_i`` (zero-padded; a particle is
real when its energy is > 0) and ``is_signal_new`` (1: top jet, 0: QCD jet).

Read with pandas (PyTables) inside the executors, ``ROWS_PER_TASK`` rows per task; the driver reads only the
column names and the row count. Columns are found by name. The jet is the sum of its constituents (pT, η, φ, E and
mass from it); the model's inputs are computed from the four-momenta as for generated jets. Classes: ``t``
(``is_signal_new`` = 1) and ``qcd`` (0: light-quark and gluon jets together).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ucluster_spark import schema
from ucluster_spark.config import DataConfig
from ucluster_spark.data.rows import RowFilter, jet_kinematics, kept_jets
from ucluster_spark.data.sources import FileSource
from ucluster_spark.errors import InputFileError

KEY = "table"
COMPONENTS = ("PX", "PY", "PZ", "E")  # the order of padded_constituent_features' four-momenta
LABEL_COLUMN = "is_signal_new"
CLASS_OF_LABEL = {1: "t", 0: "qcd"}
ROWS_PER_TASK = 50_000
"""The landscape's files hold 400,000 to 1.2 million jets of 800 columns: eight or more tasks per file."""


def _store(path: str):
    if not Path(path).is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        return pd.HDFStore(path, "r")
    except Exception as err:  # PyTables raises HDF5ExtError, OSError or ValueError
        raise InputFileError(f"{path}: not a readable HDF5 file ({type(err).__name__}: {str(err)[:300]})") from None


def inspect_frame(path: str, classes: list[str]) -> dict[str, Any]:
    """Driver side: the file's columns and rows, from its metadata and no jet; raises InputFileError."""
    if unknown := [c for c in classes if c not in CLASS_OF_LABEL.values()]:
        raise InputFileError(
            f"data.classes: top-tagging files have no {unknown[0]!r} jets (they have {list(CLASS_OF_LABEL.values())})"
        )
    with _store(path) as store:
        keys = [k.lstrip("/") for k in store.keys()]  # noqa: SIM118 (an HDFStore iterates its keys too, less clearly)
        if KEY not in keys:
            raise InputFileError(f"{path}: no key '{KEY}' (has: {keys})")
        try:
            storer = store.get_storer(KEY)
            n_jets = int(storer.nrows) if getattr(storer, "nrows", None) is not None else int(storer.shape[0])
            columns = list(store.select(KEY, start=0, stop=0).columns)
        except Exception as err:
            raise InputFileError(
                f"{path}: key '{KEY}' is not a readable DataFrame ({type(err).__name__}: {err})"
            ) from None
    indices = {c: sorted(int(m[1]) for name in columns if (m := re.fullmatch(rf"{c}_(\d+)", str(name))))
               for c in COMPONENTS}  # fmt: skip
    if LABEL_COLUMN not in columns:
        raise InputFileError(f"{path}: '{KEY}' lacks column '{LABEL_COLUMN}'")
    if not indices["E"]:
        raise InputFileError(f"{path}: '{KEY}' has no constituent columns E_0, PX_0, PY_0, PZ_0, ...")
    every = set().union(*map(set, indices.values()))
    if missing := [f"{c}_{i}" for i in sorted(every) for c in COMPONENTS if i not in indices[c]]:
        raise InputFileError(f"{path}: '{KEY}' lacks column(s) {missing[:5]} (every constituent needs E, PX, PY, PZ)")
    return {"path": path, "n_jets": n_jets, "particles": sorted(every)}


def read_frame_rows(layout: dict[str, Any], start: int, stop: int, data: DataConfig, drop_bad_jets: bool):
    """Executor side: rows [start, stop) as jets in the dataset schema, and the jets left out by why."""
    path, classes, particles = layout["path"], list(data.classes), layout["particles"]
    with _store(path) as store:
        try:
            frame = store.select(KEY, start=start, stop=stop)
        except Exception as err:
            raise InputFileError(
                f"{path}: rows {start}-{stop - 1} cannot be read ({type(err).__name__}: {err})"
            ) from None
    labels = frame[LABEL_COLUMN].to_numpy(np.float64)
    if bad := np.flatnonzero(~np.isin(labels, list(CLASS_OF_LABEL))).tolist():
        raise InputFileError(f"{path}: '{LABEL_COLUMN}' row {start + bad[0]} is {float(labels[bad[0]]):g}, not 0 or 1")
    class_of_jet = np.array([CLASS_OF_LABEL[int(v)] for v in labels])
    selection = RowFilter(path, start, stop, class_of_jet, classes, drop_bad_jets)
    p4 = np.stack([frame[[f"{c}_{i}" for i in particles]].to_numpy(np.float64) for c in COMPONENTS], axis=-1)
    selection.non_finite("its constituents", p4)
    p4 = np.nan_to_num(p4, nan=0.0, posinf=0.0, neginf=0.0)
    real = p4[..., 3] > 0
    counts = real.sum(axis=1)
    selection.no_constituents(counts, "every E_i is 0")
    selection.unphysical_particles(p4, real, "its constituents")
    jet = jet_kinematics(np.where(real[..., None], p4, 0.0).sum(axis=1))  # the sum of the constituents
    selection.mass_window(jet[schema.MASS], data.mass_range)
    return kept_jets(selection, class_of_jet, p4, real, counts, jet, data)  # no shapes in these files


class TopTaggingSource(FileSource):
    """The top-tagging landscape's files, ``ROWS_PER_TASK`` rows per task."""

    name = "toptagging"
    files = "*.h5"
    rows_per_task = ROWS_PER_TASK

    @staticmethod
    def inspect(path: str, data: DataConfig) -> dict[str, Any]:
        return inspect_frame(path, list(data.classes))

    @staticmethod
    def read_rows(
        layout: dict[str, Any], start: int, stop: int, data: DataConfig, drop_bad_jets: bool
    ) -> tuple[pd.DataFrame, Counter]:
        return read_frame_rows(layout, start, stop, data, drop_bad_jets)
