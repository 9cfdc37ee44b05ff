"""Small files in the top-tagging landscape layout with made-up jets (pandas + PyTables): for the tests and trying
``prepare --format toptagging`` where the real files cannot be fetched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def toptagging_frame(n_jets: int, seed: int = 0, particles: int = 200, max_real: int = 60) -> pd.DataFrame:
    """One row per jet: ``E_i PX_i PY_i PZ_i`` for i < ``particles`` (pT-ordered, zero-padded after 1 to
    ``max_real`` real ones) and ``is_signal_new`` (alternately 1 and 0)."""
    rng = np.random.default_rng(seed)
    values = np.zeros((n_jets, particles, 4))  # E, PX, PY, PZ as the file orders them
    for i, n in enumerate(rng.integers(1, min(max_real, particles) + 1, n_jets)):
        pt = np.sort(rng.exponential(30.0, n) + 0.5)[::-1]
        eta, phi = rng.normal(0.5, 0.2, n), rng.normal(1.0, 0.2, n)
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        values[i, :n] = np.column_stack([np.sqrt(px**2 + py**2 + pz**2) + 0.1, px, py, pz])
    columns = {f"{c}_{i}": values[:, i, k] for i in range(particles) for k, c in enumerate(("E", "PX", "PY", "PZ"))}
    frame = pd.DataFrame(columns)
    frame["is_signal_new"] = np.arange(n_jets) % 2
    return frame


def write_file(path: str | Path, frame: pd.DataFrame, file_format: str = "fixed") -> None:
    """``frame`` under the key ``table`` (the landscape's files are pandas' ``fixed`` format)."""
    frame.to_hdf(path, key="table", format=file_format, mode="w")
