import numpy as np
import pytest

from ucluster_spark.executor.centroids import ClusterMoments, reseed_starved_centroids

pytestmark = pytest.mark.portable  # no horovod, no petastorm: also in the current-releases environment


def _moments(z, nearest, k):
    moments = ClusterMoments.zeros(k, z.shape[1])
    for part in np.array_split(np.arange(len(z)), 3):  # batch by batch, as in an epoch
        moments.add(z[part], nearest[part])
    return moments


def test_moments_add_up_batches_and_survive_the_flat_round_trip():
    rng = np.random.default_rng(0)
    z, nearest = rng.normal(size=(50, 2)), rng.integers(0, 3, 50)
    moments = ClusterMoments.from_flat(_moments(z, nearest, 3).flat(), 3, 2)
    for k in range(3):
        mine = z[nearest == k]
        assert moments.counts[k] == len(mine)
        np.testing.assert_allclose(moments.sums[k], mine.sum(axis=0))
        np.testing.assert_allclose(moments.outer[k], mine.T @ mine)


def test_a_starved_centroid_splits_the_largest_cluster_along_its_principal_axis():
    rng = np.random.default_rng(1)
    # Cluster 0: 400 jets stretched along x (two sub-modes at x = -1 and +1); cluster 1: 300 jets; cluster 2: 3.
    big = np.concatenate([rng.normal([-1, 0], 0.1, (200, 2)), rng.normal([1, 0], 0.1, (200, 2))])
    z = np.concatenate([big, rng.normal([0, 5], 0.1, (300, 2)), rng.normal([9, 9], 0.1, (3, 2))])
    nearest = np.repeat([0, 1, 2], [400, 300, 3])
    centroids = np.array([[0, 0], [0, 5], [9, 9]], np.float32)
    new, moves = reseed_starved_centroids(centroids, _moments(z, nearest, 3), min_fraction=0.05)
    assert moves == [(2, 0)]
    halves = sorted([new[0], new[2]], key=lambda c: c[0])
    np.testing.assert_allclose(halves[0], [-1.0, 0.0], atol=0.05)  # mean -+ one std along x (std ~1.005)
    np.testing.assert_allclose(halves[1], [1.0, 0.0], atol=0.05)
    np.testing.assert_array_equal(new[1], centroids[1])  # the others stay


def test_nothing_moves_when_every_cluster_holds_enough_jets():
    rng = np.random.default_rng(2)
    z, nearest = rng.normal(size=(90, 3)), np.repeat([0, 1, 2], [30, 30, 30])
    centroids = rng.normal(size=(3, 3)).astype(np.float32)
    new, moves = reseed_starved_centroids(centroids, _moments(z, nearest, 3), min_fraction=0.1)
    assert moves == [] and np.array_equal(new, centroids)


@pytest.mark.parametrize("sizes, expected", [([500, 0, 0, 200], [(1, 0), (2, 3)]), ([1, 0, 0, 0], [])])
def test_each_donor_is_split_once(sizes, expected):
    rng = np.random.default_rng(3)
    nearest = np.repeat(np.arange(4), sizes)
    z = rng.normal(size=(len(nearest), 2))
    _, moves = reseed_starved_centroids(np.zeros((4, 2)), _moments(z, nearest, 4), min_fraction=0.05)
    assert moves == expected


def test_the_kmeans_sample_is_bounded_and_does_not_depend_on_the_rows_left_out():
    from ucluster_spark.executor.centroids import BoundedSample, sample_for_kmeans
    from ucluster_spark.executor.rank.collectives import LocalCollectives

    def sample_of(rows, seed=7):
        return sample_for_kmeans(BoundedSample.of(rows, 400, seed), comm)

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(5000, 3)).astype(np.float32)
    comm = LocalCollectives()
    sample = sample_of(rows)
    assert sample.shape == (400, 3)
    chosen = sorted(r.tobytes() for r in sample)
    left_out = np.array([r for r in rows if r.tobytes() not in set(chosen)])
    assert len(left_out) == 4600
    for extra in (0, 100, 4600):  # the sample again, with any number of the rows it left out, in any order
        rows_again = np.concatenate([left_out[:extra], sample])[rng.permutation(400 + extra)]
        assert sorted(r.tobytes() for r in sample_of(rows_again)) == chosen
    assert sorted(r.tobytes() for r in sample_of(rows, seed=8)) != chosen  # another seed, another sample
    np.testing.assert_array_equal(sample_of(rows[:300]), rows[:300])  # under the limit: all


def test_the_sample_fed_batch_by_batch_holds_little_and_is_the_sample_of_the_whole():
    from ucluster_spark.executor.centroids import BoundedSample, sample_for_kmeans
    from ucluster_spark.executor.rank.collectives import LocalCollectives

    comm = LocalCollectives()
    rows = np.random.default_rng(1).normal(size=(20_000, 3)).astype(np.float32)
    fed = BoundedSample(400, 7, 3)
    most_held = 0
    for start in range(0, len(rows), 37):
        fed.add(rows[start : start + 37])
        most_held = max(most_held, fed.buffered)
    assert most_held < 2 * 400 + 37 and fed.seen == 20_000
    np.testing.assert_array_equal(sample_for_kmeans(fed, comm), sample_for_kmeans(BoundedSample.of(rows, 400, 7), comm))
    small = BoundedSample(400, 7, 3)
    for start in range(0, 300, 37):
        small.add(rows[start : min(start + 37, 300)])
    np.testing.assert_array_equal(sample_for_kmeans(small, comm), rows[:300])  # under the limit: every row, in order


def test_the_kmeans_start_finds_separated_clusters_in_its_sample():
    from ucluster_spark.executor.centroids import BoundedSample, kmeans_centroids
    from ucluster_spark.executor.rank.collectives import LocalCollectives

    rng = np.random.default_rng(2)
    true_centers = np.array([[0, 0, 0], [5, 0, 0], [0, 5, 0]], np.float32)
    rows = np.concatenate([c + 0.1 * rng.normal(size=(1000, 3)) for c in true_centers]).astype(np.float32)
    centers, used, sizes = kmeans_centroids(BoundedSample.of(rows, 600, 7), 3, 7, LocalCollectives())
    assert used == 600 and sum(sizes) == 600 and min(sizes) > 150  # a sample of every cluster
    found = sorted(map(tuple, centers.round(0).tolist()))
    assert found == sorted(map(tuple, true_centers.tolist()))


def test_minibatch_kmeans_brings_the_centroids_to_the_clusters_means():
    """Three separated clusters, centroids started off to one side: after a few hundred batches each sits on its
    cluster's mean, and the count state stays bounded by the decay."""
    import tensorflow as tf

    from ucluster_spark.executor.centroids import batch_cluster_sums, minibatch_kmeans_step
    from ucluster_spark.executor.losses import squared_distances

    rng = np.random.default_rng(4)
    means = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    centroids = tf.constant(means + [[0.8, 0.6], [-0.7, 0.5], [0.6, -0.9]], tf.float32)
    counted = tf.zeros(3)
    for _ in range(300):
        z = tf.constant(means[rng.integers(0, 3, 64)] + rng.normal(0, 0.3, (64, 2)), tf.float32)
        sums = batch_cluster_sums(z, squared_distances(z, centroids))
        centroids, counted = minibatch_kmeans_step(centroids, counted, sums, 0.99)
    np.testing.assert_allclose(centroids.numpy(), means, atol=0.05)
    assert float(tf.reduce_max(counted)) <= 64 / (1 - 0.99)


def test_minibatch_kmeans_follows_a_moving_cluster_and_leaves_an_empty_one_alone():
    import tensorflow as tf

    from ucluster_spark.executor.centroids import batch_cluster_sums, minibatch_kmeans_step
    from ucluster_spark.executor.losses import squared_distances

    centroids, counted = tf.constant([[0.0, 0.0], [10.0, 10.0]]), tf.zeros(2)
    for step in range(400):  # cluster 0 drifts by 0.005 per step; no jet ever comes near centroid 1
        z = tf.fill([32, 2], 0.005 * step)
        sums = batch_cluster_sums(z, squared_distances(z, centroids))
        centroids, counted = minibatch_kmeans_step(centroids, counted, sums, 0.95)
    # With decay 0.95 the centroid lags its cluster by ~ drift x (1 / (1 - decay) - 1) = 0.095.
    assert abs(float(centroids[0, 0]) - 0.005 * 399) < 0.11
    np.testing.assert_array_equal(centroids[1].numpy(), [10.0, 10.0])
    assert float(counted[1]) == 0.0


def test_batch_cluster_sums_counts_and_sums_each_nearest_centroid():
    import tensorflow as tf

    from ucluster_spark.executor.centroids import batch_cluster_sums
    from ucluster_spark.executor.losses import squared_distances

    z = tf.constant([[0.1, 0.0], [0.0, 0.2], [5.0, 5.0]])
    sums = batch_cluster_sums(z, squared_distances(z, tf.constant([[0.0, 0.0], [5.0, 4.0], [9.0, 9.0]]))).numpy()
    np.testing.assert_allclose(sums, [[2, 0.1, 0.2], [1, 5.0, 5.0], [0, 0, 0]], atol=1e-6)
