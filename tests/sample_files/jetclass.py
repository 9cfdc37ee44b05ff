"""Small ROOT files in the JetClass layout with made-up jets (written with uproot): for the tests, the data
benchmark and trying ``prepare --format jetclass`` where the real files cannot be fetched."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ucluster_spark.data.formats.jetclass import LABEL_BRANCHES


def jetclass_values(n_jets: int, seed: int = 0, classes=("w", "z", "t"), max_particles: int = 60) -> dict:
    """Branch name -> values: jagged particle branches as lists of arrays, jet scalars, one-hot ``label_*``.
    Particles are spread around a jet axis, unordered in pT (the reader sorts them); the jet is their sum."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, max_particles, n_jets)
    axis_eta, axis_phi = rng.uniform(-1.5, 1.5, n_jets), rng.uniform(-np.pi, np.pi, n_jets)
    values: dict[str, list] = {b: [] for b in ("part_px", "part_py", "part_pz", "part_energy")}
    jets = np.zeros((n_jets, 4))
    for i, n in enumerate(counts):
        pt = rng.exponential(30.0, n) + 0.5
        eta = axis_eta[i] + rng.normal(0, 0.2, n)
        phi = axis_phi[i] + rng.normal(0, 0.2, n)
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        energy = np.sqrt(px**2 + py**2 + pz**2) + rng.uniform(0, 0.2, n)  # slightly massive particles
        for branch, v in zip(values, (px, py, pz, energy), strict=True):
            values[branch].append(v.astype(np.float32))
        total = np.array([px.sum(), py.sum(), pz.sum(), energy.sum()])
        jet_pt = np.hypot(total[0], total[1])
        jets[i] = jet_pt, np.arcsinh(total[2] / jet_pt), np.arctan2(total[1], total[0]), total[3]
    out: dict = {**values, **{b: jets[:, i].astype(np.float32) for i, b in
                              enumerate(("jet_pt", "jet_eta", "jet_phi", "jet_energy"))}}  # fmt: skip
    out["jet_sdmass"] = rng.uniform(10, 200, n_jets).astype(np.float32)
    for k in (1, 2, 3):
        out[f"jet_tau{k}"] = rng.uniform(0.1, 1.0, n_jets).astype(np.float32) / k
    label = rng.integers(0, len(classes), n_jets)
    for name, branches in LABEL_BRANCHES.items():
        for b in branches:
            chosen = (np.array(classes)[label] == name) & (b == branches[0])  # a class's first branch
            out[b] = chosen.astype(np.int32)
    return out


def write_file(path: str | Path, values: dict, tree: str = "tree") -> None:
    """``values`` (as ``jetclass_values`` gives them) as one TTree (a jagged branch gets its own counter branch,
    as uproot writes them; the reader reads it as JetClass's ``std::vector`` branches)."""
    import awkward as ak
    import uproot

    branches = {b: ak.values_astype(ak.Array(v), np.float32) if isinstance(v, list) else np.asarray(v)
                for b, v in values.items()}  # fmt: skip
    with uproot.recreate(str(path)) as handle:
        handle.mktree(tree, {b: v.type if isinstance(v, ak.Array) else v.dtype for b, v in branches.items()})
        handle[tree].extend(branches)
