"""Per-particle model inputs computed once at preparation time (never per epoch).

Definitions follow the hls4ml constituent columns: relative quantities are taken with respect to the jet axis,
``costhetarel`` is the cosine of the angle between the particle and the jet momentum.
"""

from __future__ import annotations

import numpy as np

from ucluster_spark.schema import feature_names


def constituent_features(p4: np.ndarray, jet: np.ndarray, max_constituents: int, feature_set: str) -> np.ndarray:
    """(n, 4) particle (px, py, pz, E) and the jet's (pt, eta, phi, E) -> (max_constituents, F) float32.

    Particles are ordered by decreasing pT and truncated to ``max_constituents``; the remaining slots are exactly
    zero (the model's padding mask relies on it).
    """
    names = feature_names(feature_set)
    p4 = np.asarray(p4, dtype=np.float64).reshape(-1, 4)
    px, py, pz, e = p4.T
    pt = np.hypot(px, py)
    order = np.argsort(-pt, kind="stable")[:max_constituents]
    px, py, pz, e, pt = px[order], py[order], pz[order], e[order], pt[order]
    if np.any(pt <= 0) or np.any(e <= 0):
        raise ValueError("constituents must have pt > 0 and E > 0")
    jet_pt, jet_eta, jet_phi, jet_e = (float(v) for v in jet)
    eta = np.arcsinh(pz / pt)
    phi = np.arctan2(py, px)
    etarel = eta - jet_eta
    phirel = np.mod(phi - jet_phi + np.pi, 2 * np.pi) - np.pi
    jet_p = np.array([jet_pt * np.cos(jet_phi), jet_pt * np.sin(jet_phi), jet_pt * np.sinh(jet_eta)])
    p = np.stack([px, py, pz], axis=1)
    cos_rel = p @ jet_p / np.maximum(np.linalg.norm(p, axis=1) * np.linalg.norm(jet_p), 1e-12)
    values = {
        "etarel": etarel,
        "phirel": phirel,
        "log_ptrel": np.log(pt / jet_pt),
        "deltaR": np.hypot(etarel, phirel),
        "log_e": np.log(e),
        "log_erel": np.log(e / jet_e),
        "log_pt": np.log(pt),
        "costhetarel": cos_rel,
    }
    out = np.zeros((max_constituents, len(names)), dtype=np.float32)
    out[: len(pt)] = np.stack([values[n] for n in names], axis=1)
    return out
