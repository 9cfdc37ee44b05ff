"""Keeping every centroid in use: per-cluster moments of the training embeddings and the split that re-seeds a
centroid which has lost its jets (an option, ``train.min_cluster_fraction``; the original never re-seeds).

Pure numpy: ranks add up their moments (one allreduce), then every rank takes the same decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ClusterMoments:
    """Jets, sum of z and sum of z z^T per nearest centroid: enough for each cluster's size, mean and covariance."""

    counts: np.ndarray  # (K,)
    sums: np.ndarray  # (K, D)
    outer: np.ndarray  # (K, D, D)

    @classmethod
    def zeros(cls, n_clusters: int, dim: int) -> ClusterMoments:
        return cls(np.zeros(n_clusters), np.zeros((n_clusters, dim)), np.zeros((n_clusters, dim, dim)))

    def add(self, z: np.ndarray, nearest: np.ndarray) -> None:
        """Count a batch: embeddings (B, D) and the index of each one's nearest centroid (B,)."""
        z = np.asarray(z, np.float64)
        np.add.at(self.counts, nearest, 1.0)
        np.add.at(self.sums, nearest, z)
        np.add.at(self.outer, nearest, z[:, :, None] * z[:, None, :])

    def flat(self) -> np.ndarray:
        """One vector, for a single allreduce."""
        return np.concatenate([self.counts, self.sums.ravel(), self.outer.ravel()])

    @classmethod
    def from_flat(cls, values: np.ndarray, n_clusters: int, dim: int) -> ClusterMoments:
        k, d = n_clusters, dim
        return cls(values[:k], values[k : k + k * d].reshape(k, d), values[k + k * d :].reshape(k, d, d))


def reseed_starved_centroids(
    centroids: np.ndarray, moments: ClusterMoments, min_fraction: float
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Move every centroid whose cluster holds less than ``min_fraction`` of the jets into the largest cluster,
    splitting it along its principal axis (as bisecting k-means does): the two centroids go to mean +- one standard
    deviation along that axis. Returns the new centroids and the (starved, split) pairs, largest clusters first.
    """
    centroids = np.array(centroids, np.float64, copy=True)
    counts = moments.counts.copy()
    total = counts.sum()
    moves: list[tuple[int, int]] = []
    if total == 0:
        return centroids.astype(np.float32), moves
    starved = [int(k) for k in np.argsort(counts) if counts[k] < min_fraction * total]
    donors = counts.copy()
    donors[starved] = -1.0  # a starved cluster cannot give, and a cluster is split at most once
    for dead in starved:
        donor = int(np.argmax(donors))
        n = donors[donor]
        if n < 2:
            break
        mean = moments.sums[donor] / n
        covariance = moments.outer[donor] / n - np.outer(mean, mean)
        variances, axes = np.linalg.eigh(covariance)
        step = np.sqrt(max(variances[-1], 0.0)) * axes[:, -1]
        centroids[donor], centroids[dead] = mean - step, mean + step
        donors[donor] = -1.0
        moves.append((dead, donor))
    return centroids.astype(np.float32), moves
