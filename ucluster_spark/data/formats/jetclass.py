"""The jet source for ROOT files in the JetClass layout (Qu, Li, Qian 2022): one TTree ``tree`` per file with, per
jet, the particles' four-momenta as jagged branches ``part_px part_py part_pz part_energy``, the jet's
``jet_pt jet_eta jet_phi jet_energy`` (and ``jet_sdmass jet_tau1 jet_tau2 jet_tau3`` when present) and one-hot
``label_*`` branches.

Read with uproot inside the executors, ``ENTRIES_PER_TASK`` entries per task, never a whole file on the driver
(which only reads the branch list and the entry count). Branches are found by name. The model's per-particle
inputs are computed from the four-momenta as for generated jets (``features.padded_constituent_features``); the
jet mass from the jet's four-momentum (JetClass stores none); tau21 = tau2/tau1, tau32 = tau3/tau2.

Classes: ``w`` (``label_Wqq``), ``z`` (``label_Zqq``), ``t`` (``label_Tbqq`` and ``label_Tbl``), and JetClass's own
``qcd`` (quark and gluon jets together: not ``q`` or ``g``), ``hbb hcc hgg h4q hqql``. Bad input as for hls4ml
files: structural problems (no tree, a missing branch, particle branches of unequal lengths, labels that are not
one-hot, an unreadable file) always fail naming the file and branch; NaN/inf values and jets without particles fail
unless ``drop_bad_jets``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from ucluster_spark import schema
from ucluster_spark.config import DataConfig
from ucluster_spark.data.formats.root import branch_names, padded, particle_counts, read_branches, scalar
from ucluster_spark.data.rows import RowFilter, kept_jets
from ucluster_spark.data.sources import FileSource
from ucluster_spark.errors import InputFileError

TREE = "tree"
PARTICLE_BRANCHES = ("part_px", "part_py", "part_pz", "part_energy")
JET_BRANCHES = ("jet_pt", "jet_eta", "jet_phi", "jet_energy")
SHAPE_BRANCHES = ("jet_sdmass", "jet_tau1", "jet_tau2", "jet_tau3")
LABEL_BRANCHES: dict[str, tuple[str, ...]] = {
    "qcd": ("label_QCD",),
    "hbb": ("label_Hbb",),
    "hcc": ("label_Hcc",),
    "hgg": ("label_Hgg",),
    "h4q": ("label_H4q",),
    "hqql": ("label_Hqql",),
    "z": ("label_Zqq",),
    "w": ("label_Wqq",),
    "t": ("label_Tbqq", "label_Tbl"),
}
ENTRIES_PER_TASK = 20_000
"""JetClass files hold 100,000 jets: five tasks per file; a task holds ~20,000 x 128 particles in memory."""


@dataclass(frozen=True)
class TreeLayout:
    """What the driver learned of one file: its entries and which optional branches it has."""

    path: str
    n_jets: int
    labels: list[str]
    shapes: list[str]


def inspect_tree(path: str, classes: list[str]) -> TreeLayout:
    """The file's structure, checked on the driver from its metadata only; raises InputFileError naming the file
    and the branch."""
    unknown = [c for c in classes if c not in LABEL_BRANCHES]
    if unknown:
        raise InputFileError(
            f"data.classes: JetClass files have no {unknown[0]!r} jets (they have {list(LABEL_BRANCHES)})"
        )
    names, n_jets = branch_names(path, TREE)
    needed = set(PARTICLE_BRANCHES) | set(JET_BRANCHES) | {b for c in classes for b in LABEL_BRANCHES[c]}
    if missing := sorted(needed - names):
        raise InputFileError(f"{path}: TTree '{TREE}' lacks branch(es) {missing}")
    labels = [b for branches in LABEL_BRANCHES.values() for b in branches if b in names]
    return TreeLayout(path, n_jets, labels, [b for b in SHAPE_BRANCHES if b in names])


def read_entries(
    layout: TreeLayout, start: int, stop: int, data: DataConfig, drop_bad_jets: bool
) -> tuple[pd.DataFrame, Counter]:
    """Entries [start, stop) of one file as jets in the dataset schema, and counts of what was dropped and why."""
    path, classes = layout.path, list(data.classes)
    arrays = read_branches(path, TREE, [*PARTICLE_BRANCHES, *JET_BRANCHES, *layout.labels, *layout.shapes], start, stop)
    counts = particle_counts(arrays, PARTICLE_BRANCHES, path, start)
    onehot = np.stack([scalar(arrays, b) for b in layout.labels], axis=1)
    is_onehot = np.all((onehot == 0) | (onehot == 1), axis=1) & (onehot.sum(axis=1) == 1)
    if not is_onehot.all():
        row = int(np.flatnonzero(~is_onehot)[0])
        raise InputFileError(f"{path}: entry {start + row}: label branches {layout.labels} are not one-hot: "
                             f"{onehot[row].tolist()}")  # fmt: skip
    class_of_label = {b: c for c, branches in LABEL_BRANCHES.items() for b in branches}
    class_of_jet = np.array([class_of_label[layout.labels[i]] for i in onehot.argmax(axis=1)])
    selection = RowFilter(path, start, stop, class_of_jet, classes, drop_bad_jets, unit="entry", units="entries")

    width = max(int(counts.max(initial=0)), 1)
    p4 = np.stack([padded(arrays[b], width) for b in PARTICLE_BRANCHES], axis=-1)  # (N, width, 4)
    jets = np.stack([scalar(arrays, b) for b in JET_BRANCHES], axis=1)
    real = np.arange(width)[None, :] < counts[:, None]
    for branch, values in [*zip(PARTICLE_BRANCHES, np.moveaxis(p4, -1, 0), strict=True),
                           *zip(JET_BRANCHES, jets.T, strict=True)]:  # fmt: skip
        selection.non_finite(f"branch '{branch}'", values)
    selection.no_constituents(counts, f"'{PARTICLE_BRANCHES[0]}' is empty")
    selection.unphysical_particles(np.nan_to_num(p4), real, f"branches {list(PARTICLE_BRANCHES)}")
    pt, eta, phi, energy = jets.T  # JetClass stores the jet's pT, η, φ, E (and no mass)
    jet = {schema.PT: pt, schema.ETA: eta, schema.PHI: phi, "energy": energy,
           schema.MASS: np.sqrt(np.maximum(energy**2 - (pt * np.cosh(eta)) ** 2, 0.0))}  # fmt: skip
    selection.mass_window(jet[schema.MASS], data.mass_range)
    shapes = {b: scalar(arrays, b) for b in layout.shapes}

    def ratio(top: str, bottom: str):
        if top in shapes and bottom in shapes:
            return np.divide(shapes[top], shapes[bottom], out=np.zeros(len(counts)), where=shapes[bottom] > 0)
        return None

    columns = {schema.SD_MASS: shapes.get("jet_sdmass"), schema.TAU21: ratio("jet_tau2", "jet_tau1"),
               schema.TAU32: ratio("jet_tau3", "jet_tau2")}  # fmt: skip
    return kept_jets(selection, class_of_jet, p4, real, counts, jet, data, columns)


class JetClassSource(FileSource):
    """Files in the JetClass layout, ``ENTRIES_PER_TASK`` entries per task."""

    name = "jetclass"
    files = "*.root"
    rows_per_task = ENTRIES_PER_TASK

    @staticmethod
    def inspect(path: str, data: DataConfig) -> dict[str, Any]:
        return asdict(inspect_tree(path, list(data.classes)))

    @staticmethod
    def read_rows(
        layout: dict[str, Any], start: int, stop: int, data: DataConfig, drop_bad_jets: bool
    ) -> tuple[pd.DataFrame, Counter]:
        return read_entries(TreeLayout(**layout), start, stop, data, drop_bad_jets)
