import numpy as np
import pytest

from ucluster_spark.metrics import (
    clustering_accuracy,
    collapse_warnings,
    contingency,
    hungarian_mapping,
    summarize,
)

pytestmark = pytest.mark.portable  # no horovod, no petastorm: also in the current-releases environment


def test_perfect_clustering_under_relabelling_is_accuracy_one():
    labels = np.array([0, 0, 1, 1, 2, 2])
    clusters = np.array([2, 2, 0, 0, 1, 1])
    counts = contingency(clusters, labels, 3, 3)
    assert clustering_accuracy(counts) == 1.0
    assert hungarian_mapping(counts) == {0: 1, 1: 2, 2: 0}


def test_accuracy_uses_one_to_one_matching_not_majority_vote():
    # Cluster 0 holds most of classes 0 and 1; a majority vote would map both clusters to class 0 or 1.
    counts = np.array([[5, 4, 0], [0, 1, 0], [0, 0, 3]])
    # Best one-to-one: 0->0 (5), 1->1 (1), 2->2 (3) = 9 of 13.
    assert clustering_accuracy(counts) == pytest.approx(9 / 13)


def test_all_jets_in_one_cluster_scores_the_largest_class_fraction():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    counts = contingency(np.zeros(10, int), labels, 3, 3)
    assert clustering_accuracy(counts) == pytest.approx(0.5)
    summary = summarize(counts, ["w", "z", "t"])
    assert summary["nmi"] == pytest.approx(0.0)
    assert summary["ari"] == pytest.approx(0.0)
    assert summary["cluster_sizes"] == [10, 0, 0]


def test_summary_matches_sklearn_on_the_expanded_labels():
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 500)
    clusters = np.where(rng.random(500) < 0.7, labels, rng.integers(0, 3, 500))
    summary = summarize(contingency(clusters, labels, 3, 3), ["w", "z", "t"])
    assert summary["nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters))
    assert summary["ari"] == pytest.approx(adjusted_rand_score(labels, clusters))
    assert summary["n_jets"] == 500
    assert summary["clustering_accuracy"] == pytest.approx(np.mean(clusters == labels))


@pytest.mark.parametrize(
    "clusters, labels",
    [([0, 0, 0, 0], [1, 1, 1, 1]), ([0, 1, 2, 3], [3, 2, 1, 0]), ([0, 0, 0, 0], [0, 1, 2, 0]),
     ([0, 1, 2, 0], [0, 0, 0, 0]), ([0, 1, 1, 2, 2, 2], [0, 1, 2, 0, 1, 2]), ([1], [2])],
)  # fmt: skip
def test_nmi_and_ari_match_sklearn_in_its_limit_cases(clusters, labels):
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    summary = summarize(contingency(np.array(clusters), np.array(labels), 4, 4))
    assert summary["nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters))
    assert summary["ari"] == pytest.approx(adjusted_rand_score(labels, clusters))


def test_the_metrics_of_a_huge_set_need_only_its_matrix():
    """10^15 jets: per-jet label arrays (what sklearn's functions take) would need 16 PB."""
    counts = np.array([[700, 200, 100], [150, 800, 50], [100, 100, 800]])
    small, huge = summarize(counts), summarize(counts * 10**12)
    assert huge["n_jets"] == 3000 * 10**12
    assert huge["clustering_accuracy"] == pytest.approx(small["clustering_accuracy"])
    assert huge["nmi"] == pytest.approx(small["nmi"])  # depends on the proportions only
    assert huge["ari"] == pytest.approx(small["ari"], abs=2e-3)  # pair counts: only to order 1/n


def test_summed_shard_matrices_equal_the_whole_set_matrix():
    rng = np.random.default_rng(2)
    labels, clusters = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    whole = contingency(clusters, labels, 3, 3)
    parts = contingency(clusters[:120], labels[:120], 3, 3) + contingency(clusters[120:], labels[120:], 3, 3)
    assert np.array_equal(whole, parts)


def test_out_of_range_values_are_refused():
    with pytest.raises(ValueError, match="label values must lie in"):
        contingency(np.array([0]), np.array([3]), 3, 3)
    with pytest.raises(ValueError, match="empty set"):
        clustering_accuracy(np.zeros((3, 3), int))


def test_collapse_warnings_name_empty_clusters_and_dead_dimensions():
    assert collapse_warnings([10, 5, 7], [0.3, 0.2, 0.1]) == []
    assert collapse_warnings([12, 0, 10], [0.3, 0.0, 0.1]) == [
        "cluster 1 is empty",
        "embedding dimension 1 is dead (std 0)",
    ]


def test_the_embedding_geometry_tells_a_centroid_cut_from_what_z_holds():
    """Two W/Z blobs apart along z's thinnest axis and a top blob: centroids placed on the two W/Z blobs cut W from
    Z perfectly; centroids split along the wide axis cut them at chance, while z still holds them for a classifier
    and the W/Z normal lies on the thin axis."""
    from benchmarks.embedding_geometry import geometry

    rng = np.random.default_rng(0)
    n = 200
    centers = np.array([[0.0, 0.0, -0.05], [0.0, 0.0, 0.05], [2.0, 0.0, 0.0]])  # W, Z, top; W/Z apart along axis 2
    label = np.repeat([0, 1, 2], n)
    z = centers[label] + rng.normal(size=(3 * n, 3)) * [1.0, 0.3, 0.01]  # wide, middle, thin
    split = np.where(np.arange(3 * n) % 2 == 0, "train", "test")

    def report(centroids):
        distances = ((z[:, None, :] - centroids[None]) ** 2).sum(-1)
        jets = {"split": split, "label": label, "cluster": distances.argmin(1), "z": z, "distances": distances}
        return geometry(jets, ["w", "z", "t"])

    on_the_blobs = report(centers)
    assert on_the_blobs["w_versus_z"]["own_centroids"] > 0.99
    across = report(np.array([[-0.7, 0.0, 0.0], [0.7, 0.0, 0.0], [2.5, 0.0, 0.0]]))  # a cut of the wide axis
    assert 0.4 < across["w_versus_z"]["own_centroids"] < 0.6
    assert across["w_versus_z"]["supervised_on_z"] > 0.99 and across["supervised_on_z"] > 0.8
    assert across["w_versus_z"]["linear_normal_on_principal_axes"][0] > 0.99  # the thinnest axis (ascending)
    assert across["test_w_and_z_per_cluster"][2]["w"] + across["test_w_and_z_per_cluster"][2]["z"] < n
