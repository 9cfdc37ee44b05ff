"""Clustering metrics over a whole evaluation set (never averaged per batch, which flatters the result).

Everything is derived from the cluster x class contingency matrix, so ranks can each count their shard and sum
the matrices (one allreduce) before the metrics are computed once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import comb
from scipy.stats import entropy


def contingency(clusters: np.ndarray, labels: np.ndarray, n_clusters: int, n_classes: int) -> np.ndarray:
    """Counts[i, j] = jets in cluster i with true class j."""
    clusters = np.asarray(clusters, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if clusters.shape != labels.shape:
        raise ValueError(f"clusters and labels differ in shape: {clusters.shape} vs {labels.shape}")
    for name, values, bound in (("cluster", clusters, n_clusters), ("label", labels, n_classes)):
        if values.size and (values.min() < 0 or values.max() >= bound):
            raise ValueError(f"{name} values must lie in [0, {bound}), got [{values.min()}, {values.max()}]")
    counts = np.zeros((n_clusters, n_classes), dtype=np.int64)
    np.add.at(counts, (clusters, labels), 1)
    return counts


def hungarian_mapping(counts: np.ndarray) -> dict[int, int]:
    """The one-to-one cluster -> class matching that maximises the matched jets (scipy's Hungarian method)."""
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return {int(r): int(c) for r, c in zip(rows, cols, strict=True)}


def clustering_accuracy(counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        raise ValueError("clustering accuracy of an empty set is undefined")
    mapping = hungarian_mapping(counts)
    return float(sum(counts[r, c] for r, c in mapping.items()) / total)


def normalized_mutual_information(counts: np.ndarray) -> float:
    """scikit-learn's ``normalized_mutual_info_score`` (arithmetic mean of the entropies, the same limit cases)
    from the contingency matrix, with scipy's entropies: no per-jet arrays, so 100M jets cost what 100 do (and no
    int64 products of marginals, which overflow in scikit-learn's ``mutual_info_score`` past ~3e9 jets)."""
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts.sum(axis=1) > 0][:, counts.sum(axis=0) > 0]
    if counts.shape[0] == counts.shape[1] <= 1:
        return 1.0  # neither labelling splits the data: a perfect match
    clusters, classes = entropy(counts.sum(axis=1)), entropy(counts.sum(axis=0))
    mutual = max(clusters + classes - entropy(counts.ravel()), 0.0)
    if mutual == 0:
        return 0.0
    return float(mutual / np.mean([clusters, classes]))


def adjusted_rand_index(counts: np.ndarray) -> float:
    """scikit-learn's ``adjusted_rand_score`` from the contingency matrix (Hubert & Arabie's pair counts)."""
    counts = np.asarray(counts, dtype=np.float64)
    pairs = comb(counts.sum(), 2)
    together = comb(counts, 2).sum()
    same_cluster, same_class = comb(counts.sum(axis=1), 2).sum(), comb(counts.sum(axis=0), 2).sum()
    expected = same_cluster * same_class / pairs if pairs else 0.0
    best = (same_cluster + same_class) / 2
    if np.isclose(best, expected, rtol=1e-12, atol=0.0):  # exact but for rounding; a real gap is >= ~n pairs
        return 1.0  # both labellings trivial and identical (one group, or every jet alone)
    return float((together - expected) / (best - expected))


def summarize(counts: np.ndarray, class_names: list[str] | None = None) -> dict[str, Any]:
    """Accuracy, NMI, ARI, the mapping and the matrix, ready for ``metrics.json``."""
    counts = np.asarray(counts, dtype=np.int64)
    mapping = hungarian_mapping(counts)
    names = class_names or [str(j) for j in range(counts.shape[1])]
    return {
        "clustering_accuracy": clustering_accuracy(counts),
        "nmi": normalized_mutual_information(counts),
        "ari": adjusted_rand_index(counts),
        "n_jets": int(counts.sum()),
        "cluster_to_class": {str(k): names[v] for k, v in mapping.items()},
        "cluster_sizes": [int(v) for v in counts.sum(axis=1)],
        "confusion_matrix": counts.tolist(),
        "confusion_matrix_axes": {"rows": "cluster", "columns": names},
    }


def collapse_warnings(cluster_sizes: list[int], embedding_std: list[float], min_std: float = 1e-3) -> list[str]:
    """Signs that the clustering has degenerated: empty clusters and dead (constant) embedding dimensions."""
    found = [f"cluster {k} is empty" for k, n in enumerate(cluster_sizes) if n == 0]
    found += [f"embedding dimension {d} is dead (std {s:.2g})" for d, s in enumerate(embedding_std) if s < min_std]
    return found


def loss_warnings(history: list[dict[str, Any]], rise: float = 2.0, clustering_rise: float = 10.0) -> list[str]:
    """Signs that training went the wrong way without diverging: the focal loss ending above ``rise`` times its first
    step's (a sane run only lowers it), the clustering loss per jet ending ``clustering_rise`` times its first
    clustering epoch's."""
    if not history:
        return []
    found = []
    first, last = history[0].get("initial_focal_loss"), history[-1].get("focal_loss")
    if first and last is not None and last > rise * first:
        found.append(f"the focal loss ended at {last:.4g}, {last / first:.3g} times its first step's {first:.4g}")
    clustering = [h["clustering_loss_per_jet"] for h in history if h.get("beta", 0) > 0]
    if clustering and clustering[0] > 0 and clustering[-1] > clustering_rise * clustering[0]:
        found.append(f"the clustering loss per jet ended at {clustering[-1]:.4g}, {clustering[-1] / clustering[0]:.3g} "
                     f"times its first clustering epoch's {clustering[0]:.4g}")  # fmt: skip
    return found
