"""Clustering metrics over a whole evaluation set (never averaged per batch, which flatters the result).

Everything is derived from the cluster x class contingency matrix, so ranks can each count their shard and sum
the matrices (one allreduce) before the metrics are computed once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


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


def _labels_from_counts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cells = np.argwhere(counts > 0)
    repeats = counts[counts > 0]
    return np.repeat(cells[:, 0], repeats), np.repeat(cells[:, 1], repeats)


def summarize(counts: np.ndarray, class_names: list[str] | None = None) -> dict[str, Any]:
    """Accuracy, NMI, ARI, the mapping and the matrix, ready for ``metrics.json``."""
    counts = np.asarray(counts, dtype=np.int64)
    clusters, labels = _labels_from_counts(counts)
    mapping = hungarian_mapping(counts)
    names = class_names or [str(j) for j in range(counts.shape[1])]
    return {
        "clustering_accuracy": clustering_accuracy(counts),
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "ari": float(adjusted_rand_score(labels, clusters)),
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
