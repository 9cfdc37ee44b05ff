"""The centroids' data: the k-means start on a bounded sample of training embeddings, the mini-batch k-means step
that keeps them on their jets (``train.centroid_update: kmeans``), per-cluster moments of the training embeddings,
and the split that re-seeds a centroid which has lost its jets (an option, ``train.min_cluster_fraction``; the
original never re-seeds).

numpy and scikit-learn plus a rank's collectives (``comm``): ranks add up what they hold (small sums), then every
rank takes the same decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import tensorflow as tf

if TYPE_CHECKING:
    from ucluster_spark.executor.rank.collectives import Collectives


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


def batch_cluster_sums(z: tf.Tensor, distances: tf.Tensor) -> tf.Tensor:
    """(K, D + 1): per nearest centroid (``distances``: (B, K) squared distances, as the model returns them), the
    jets' count and the sum of their z: what ranks add up for one mini-batch k-means step."""
    one_hot = tf.one_hot(tf.argmin(distances, axis=1), tf.shape(distances)[1], dtype=z.dtype)  # (B, K)
    return tf.concat([tf.reduce_sum(one_hot, axis=0)[:, None], tf.transpose(one_hot) @ z], axis=1)


def minibatch_kmeans_step(
    centroids: tf.Tensor, counted: tf.Tensor, cluster_sums: tf.Tensor, decay: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """One mini-batch k-means update (Sculley 2010) with forgetting: each centroid moves toward the mean of its
    batch jets by n_k / N_k, where N_k = decay * N_k + n_k counts the jets it has absorbed. ``cluster_sums`` is
    ``batch_cluster_sums`` over the global batch. A centroid with no jet in the batch stays. Returns the new
    (centroids, counted)."""
    n = cluster_sums[:, 0]
    counted = decay * counted + n
    rate = tf.math.divide_no_nan(n, counted)[:, None]
    mean = tf.math.divide_no_nan(cluster_sums[:, 1:], n[:, None])
    return centroids + rate * (mean - centroids) * tf.cast(n[:, None] > 0, centroids.dtype), counted


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


def row_keys(rows: np.ndarray, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each row's values: a key that does not depend on where or with what else a row is.
    pandas hashes the values (its ``hash_key`` only applies to strings); the seed is mixed in with splitmix64's
    finaliser, so another seed gives another order."""
    hashed = pd.util.hash_pandas_object(pd.DataFrame(rows.reshape(len(rows), -1)), index=False).to_numpy(np.uint64)
    with np.errstate(over="ignore"):  # arithmetic modulo 2^64 is the point
        z = hashed + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class BoundedSample:
    """One rank's candidates for the k-means sample, fed batch by batch: only the rows with the ``limit`` smallest
    keys (``row_keys``) seen so far are kept, in arrival order, so memory stays below about 2 x ``limit`` rows
    whatever the shard's size. Nothing is lost: the ``limit`` smallest keys over all ranks are among the union of
    every rank's ``limit`` smallest."""

    def __init__(self, limit: int, seed: int, dim: int) -> None:
        self.limit, self.seed = limit, seed
        self.seen = 0
        self._rows = [np.zeros((0, dim), np.float32)]
        self._keys = [np.zeros(0, np.uint64)]
        self._held = 0

    @classmethod
    def of(cls, rows: np.ndarray, limit: int, seed: int) -> BoundedSample:
        sample = cls(limit, seed, rows.shape[1])
        sample.add(rows)
        return sample

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.float32)
        self._rows.append(rows)
        self._keys.append(row_keys(rows, self.seed))
        self.seen += len(rows)
        self._held += len(rows)
        if self._held >= 2 * self.limit:
            self._reduce()

    @property
    def buffered(self) -> int:
        """Rows held now (at most about 2 x ``limit``)."""
        return self._held

    def _reduce(self) -> None:
        rows, keys = np.concatenate(self._rows), np.concatenate(self._keys)
        if len(keys) > self.limit:
            keep = keys <= np.partition(keys, self.limit - 1)[self.limit - 1]  # ties at the threshold all stay
            rows, keys = rows[keep], keys[keep]
        self._rows, self._keys, self._held = [rows], [keys], len(rows)

    def held(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept rows and their keys (every row seen, in order, if no more than ``limit`` were)."""
        self._reduce()
        return self._rows[0], self._keys[0]


def sample_for_kmeans(local: BoundedSample, comm: Collectives) -> np.ndarray:
    """At most ``local.limit`` rows from all ranks, the same array on every rank, without gathering the others: the
    ``limit`` rows with the smallest keys over all ranks, their threshold found by bisection on counts (one small
    sum per step, 64 at most). Rows whose keys are above the threshold change nothing, so the sample does not
    depend on how many rows were left out; memory and traffic are the sample's, whatever the dataset's size. With
    ``limit`` rows or fewer in all, every row, in rank order."""
    limit = local.limit
    rows, keys = local.held()
    total = int(comm.sum(np.array([local.seen], np.int64), "kmeans_rows")[0])
    if total <= limit:
        return comm.gather(rows, "kmeans_sample")
    low, high = 0, 2**64 - 1  # the smallest threshold with at least ``limit`` keys at or below it is in [low, high]
    while low < high:
        middle = low + (high - low) // 2
        below = np.count_nonzero(keys <= np.uint64(middle))
        if int(comm.sum(np.array([below], np.int64), "kmeans_threshold")[0]) >= limit:
            high = middle
        else:
            low = middle + 1
    chosen = rows[keys <= np.uint64(high)]
    return comm.gather(chosen, "kmeans_sample")[:limit]  # more than limit only for rows equal at the threshold


def kmeans_centroids(
    candidates: BoundedSample, n_clusters: int, seed: int, comm: Collectives
) -> tuple[np.ndarray, int, list[int]]:
    """k-means (scikit-learn, once, on rank 0) on the sample of every rank's candidates, its centroids broadcast:
    the same (centroids, sample size, cluster sizes) on every rank."""
    from sklearn.cluster import KMeans

    sample = sample_for_kmeans(candidates, comm)
    centers = np.zeros((n_clusters, sample.shape[1]), np.float32)
    sizes = np.zeros(n_clusters, np.float32)
    if comm.rank == 0:
        km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit(sample)
        centers = km.cluster_centers_.astype(np.float32)
        sizes = np.bincount(km.labels_, minlength=n_clusters).astype(np.float32)
    # Collective: rank 0's centroids and cluster sizes everywhere.
    shared = comm.broadcast(np.concatenate([centers, sizes[:, None]], axis=1), 0, "centroids_init")
    return shared[:, :-1], len(sample), [int(n) for n in shared[:, -1]]
