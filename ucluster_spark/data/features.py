"""Per-particle model inputs computed once at preparation time (never per epoch).

Definitions follow the hls4ml constituent columns: relative quantities are taken with respect to the jet axis,
``costhetarel`` is the cosine of the angle between the particle and the jet momentum.
"""

from __future__ import annotations

import numpy as np

from ucluster_spark.schema import feature_names


def padded_constituent_features(
    p4: np.ndarray, real: np.ndarray, jets: np.ndarray, max_constituents: int, feature_set: str
) -> np.ndarray:
    """(N, S, 4) particle (px, py, pz, E), (N, S) mask of the real ones and (N, 4) jets (pt, eta, phi, E) ->
    (N, max_constituents, F) float32, for a batch of jets at once.

    Each jet's particles are ordered by decreasing pT and truncated to ``max_constituents``; the remaining slots are
    exactly zero (the model's padding mask relies on it). Raises ValueError if a real particle has pt or E <= 0.
    """
    names = feature_names(feature_set)
    p4 = np.asarray(p4, dtype=np.float64)
    real = np.asarray(real, dtype=bool)
    pt = np.hypot(p4[..., 0], p4[..., 1])
    order = np.argsort(np.where(real, -pt, np.inf), axis=1, kind="stable")[:, :max_constituents]
    px, py, pz, e = (np.take_along_axis(p4[..., i], order, axis=1) for i in range(4))
    pt, real = np.take_along_axis(pt, order, axis=1), np.take_along_axis(real, order, axis=1)
    if np.any(real & ((pt <= 0) | (e <= 0))):
        raise ValueError("constituents must have pt > 0 and E > 0")
    pt, e = np.where(real, pt, 1.0), np.where(real, e, 1.0)  # padded slots: no log of 0 (zeroed below)
    jet_pt, jet_eta, jet_phi, jet_e = (np.asarray(jets, dtype=np.float64)[:, i : i + 1] for i in range(4))
    eta = np.arcsinh(pz / pt)
    phi = np.arctan2(py, px)
    etarel = eta - jet_eta
    phirel = np.mod(phi - jet_phi + np.pi, 2 * np.pi) - np.pi
    jet_p = np.stack([jet_pt * np.cos(jet_phi), jet_pt * np.sin(jet_phi), jet_pt * np.sinh(jet_eta)], axis=-1)
    p = np.stack([px, py, pz], axis=-1)
    norms = np.linalg.norm(p, axis=-1) * np.linalg.norm(jet_p, axis=-1)
    cos_rel = (p * jet_p).sum(axis=-1) / np.maximum(norms, 1e-12)
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
    out = np.zeros((len(p4), max_constituents, len(names)), dtype=np.float32)
    out[:, : order.shape[1]] = np.where(real[..., None], np.stack([values[n] for n in names], axis=-1), 0.0)
    return out


def constituent_features(p4: np.ndarray, jet: np.ndarray, max_constituents: int, feature_set: str) -> np.ndarray:
    """One jet: (n, 4) particle (px, py, pz, E) and the jet's (pt, eta, phi, E) -> (max_constituents, F) float32."""
    p4 = np.asarray(p4, dtype=np.float64).reshape(1, -1, 4)
    real = np.ones(p4.shape[:2], dtype=bool)
    return padded_constituent_features(p4, real, np.asarray(jet, dtype=np.float64).reshape(1, 4), max_constituents,
                                       feature_set)[0]  # fmt: skip
