"""Small HDF5 files in the public hls4ml LHC-jet layout with made-up values (h5py): for the tests, the data
benchmark and trying the prepare job where the real files cannot be fetched."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PARTICLE_COLUMNS = [
    "j1_px",
    "j1_py",
    "j1_pz",
    "j1_e",
    "j1_erel",
    "j1_pt",
    "j1_ptrel",
    "j1_eta",
    "j1_etarel",
    "j1_etarot",
    "j1_phi",
    "j1_phirel",
    "j1_phirot",
    "j1_deltaR",
    "j1_costheta",
    "j1_costhetarel",
]
JET_COLUMNS = [
    "j_ptfrac",
    "j_pt",
    "j_eta",
    "j_mass",
    "j_tau1_b1",
    "j_tau2_b1",
    "j_tau3_b1",
    "j_tau21_b1",
    "j_tau32_b1",
    "j_mass_mmdt",
    "j_multiplicity",
    "j_g",
    "j_q",
    "j_w",
    "j_z",
    "j_t",
    "j_undef",
]
CLASSES = ["g", "q", "w", "z", "t"]


def jet_values(n_jets: int, slots: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """Column name -> values: particles (n_jets, slots) zero-padded, jets (n_jets,); classes cycle g,q,w,z,t."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(5, slots + 1, n_jets)
    values: dict[str, np.ndarray] = {}
    real = np.arange(slots)[None, :] < counts[:, None]
    pt = np.sort(rng.exponential(50.0, (n_jets, slots)) + 1.0, axis=1)[:, ::-1]
    shuffle = rng.permuted(np.tile(np.arange(slots), (n_jets, 1)), axis=1)  # store out of pT order
    for i, name in enumerate(PARTICLE_COLUMNS):
        column = pt if name == "j1_pt" else rng.uniform(0.1, 2.0, (n_jets, slots)) + i
        values[name] = np.take_along_axis(np.where(real, column, 0.0), shuffle, axis=1)
    for name in JET_COLUMNS:
        values[name] = rng.uniform(0.1, 1.0, n_jets)
    values["j_pt"] = rng.uniform(800, 1200, n_jets)
    values["j_mass"] = rng.uniform(0, 250, n_jets)
    label = np.arange(n_jets) % 5
    for k, name in enumerate(CLASSES):
        values[f"j_{name}"] = (label == k).astype(float)
    values["j_undef"] = np.zeros(n_jets)
    return {k: v.astype(np.float32) for k, v in values.items()}  # the files store float32


def write_file(
    path: Path, values: dict[str, np.ndarray], particle_columns=None, jet_columns=None, skip_datasets=()
) -> Path:
    """Write the datasets of the hls4ml layout holding ``values`` in the given column order."""
    import h5py  # the ``sim`` extra

    particle_columns = particle_columns or PARTICLE_COLUMNS
    jet_columns = jet_columns or JET_COLUMNS
    with h5py.File(path, "w") as f:
        datasets = {
            "jetConstituentList": np.stack([values[c] for c in particle_columns], axis=-1).astype(np.float32),
            # As in the real files: a trailing name with no column.
            "particleFeatureNames": np.array([c.encode() for c in particle_columns] + [b"j1_pdgid"]),
            "jets": np.stack([values[c] for c in jet_columns], axis=-1).astype(np.float32),
            "jetFeatureNames": np.array([c.encode() for c in jet_columns]),
            "jetImage": np.zeros((len(values["j_pt"]), 2, 2), np.float32),
        }
        for name, data in datasets.items():
            if name not in skip_datasets:
                f.create_dataset(name, data=data)
    return path


def expected_features(values: dict[str, np.ndarray], jet: int, max_constituents: int = 100) -> np.ndarray:
    """The ucluster8 features of one jet computed straight from the column values."""
    pt = values["j1_pt"][jet]
    order = np.argsort(-pt, kind="stable")[: min(int((pt > 0).sum()), max_constituents)]
    cols = [
        values["j1_etarel"][jet],
        values["j1_phirel"][jet],
        np.log(np.where(pt > 0, values["j1_ptrel"][jet], 1)),
        values["j1_deltaR"][jet],
        np.log(np.where(pt > 0, values["j1_e"][jet], 1)),
        np.log(np.where(pt > 0, values["j1_erel"][jet], 1)),
        np.log(np.where(pt > 0, pt, 1)),
        values["j1_costhetarel"][jet],
    ]
    out = np.zeros((max_constituents, 8), np.float32)
    out[: len(order)] = np.stack([c[order] for c in cols], axis=-1)
    return out
