import numpy as np
import pytest
import tensorflow as tf

from ucluster_spark.losses import (
    HalvingSchedule,
    alpha_for_epoch,
    clustering_loss_per_jet,
    focal_loss,
    mass_bin,
    reduce_clustering_loss,
    soft_assignment,
)


def test_focal_loss_matches_a_hand_computation():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], np.float32)
    labels = np.array([0, 2])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    p_true = p[np.arange(2), labels]
    expected = np.mean(-((1 - p_true) ** 4) * np.log(p_true))
    assert focal_loss(labels, logits, 4.0).numpy() == pytest.approx(expected, rel=1e-5)
    # gamma = 0 is plain cross-entropy.
    ce = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    assert focal_loss(labels, logits, 0.0).numpy() == pytest.approx(np.mean(ce.numpy()), rel=1e-5)


def test_focal_loss_over_several_targets_is_the_mean_of_each():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 2, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=(5, 2))
    each = [focal_loss(labels[:, t], logits[:, t], 4.0).numpy() for t in range(2)]
    assert focal_loss(labels, logits, 4.0).numpy() == pytest.approx(np.mean(each), rel=1e-5)


def test_mass_bins_follow_the_original_edges_with_overflow():
    masses = np.array([0.0, 10.0, 10.6, 105.0, 199.9, 200.0, 5000.0], np.float32)
    # Edges linspace(0, 200, 20): width 200/19; 20 classes, the last one is overflow.
    expected = np.clip(np.digitize(masses, np.linspace(0, 200, 20)) - 1, 0, 19)
    assert mass_bin(masses, 20, 200.0).numpy().tolist() == expected.tolist()
    assert mass_bin(masses, 20, 200.0).numpy().max() == 19
    # One column per target: same bins, same shape.
    two = np.stack([masses, masses[::-1]], axis=-1)
    assert mass_bin(two, 20, 200.0).numpy().tolist() == np.stack([expected, expected[::-1]], axis=-1).tolist()


def test_clustering_loss_is_distance_weighted_by_the_soft_assignment():
    z = tf.constant([[0.0, 0.0], [1.0, 1.0]])
    mu = tf.constant([[0.0, 0.0], [1.0, 0.0]])
    d = np.array([[0.0, 1.0], [2.0, 1.0]])
    for alpha in (0.0, 1.0, 50.0):
        w = np.exp(-alpha * (d - d.min(axis=1, keepdims=True)))
        w /= w.sum(axis=1, keepdims=True)
        expected = (d * w).sum(axis=1)
        np.testing.assert_allclose(clustering_loss_per_jet(z, mu, alpha).numpy(), expected, rtol=1e-5)
    # Large alpha tends to hard k-means: the distance to the nearest centroid.
    np.testing.assert_allclose(clustering_loss_per_jet(z, mu, 1e4).numpy(), [0.0, 1.0], atol=1e-5)


def test_soft_assignment_is_stable_for_huge_distances():
    s = soft_assignment(tf.constant([[1e6, 1e6 + 1.0]]), 100.0).numpy()
    assert np.all(np.isfinite(s)) and s[0, 0] == pytest.approx(1.0)


def test_gradients_reach_the_centroids():
    mu = tf.Variable([[0.0, 0.0], [2.0, 2.0]])
    z = tf.constant([[0.5, 0.1], [1.9, 2.2]])
    with tf.GradientTape() as tape:
        loss = reduce_clustering_loss(clustering_loss_per_jet(z, mu, 5.0), "sum")
    grad = tape.gradient(loss, mu)
    assert grad is not None and np.all(np.abs(grad.numpy()).sum(axis=1) > 0)


def test_sum_reduction_weighs_the_batch_size_and_mean_does_not():
    per_jet = tf.ones(64)
    assert reduce_clustering_loss(per_jet, "sum").numpy() == 64
    assert reduce_clustering_loss(per_jet, "mean").numpy() == 1
    with pytest.raises(ValueError, match="unknown clustering reduction"):
        reduce_clustering_loss(per_jet, "max")


def test_alpha_ramps_every_epoch_after_pretraining():
    values = [alpha_for_epoch(e, pretrain_epochs=3, alpha0=5.0) for e in range(7)]
    assert values == [0.0, 0.0, 0.0, 5.0, 10.0, 15.0, 20.0]


def test_learning_rate_halves_every_500k_samples_down_to_the_floor():
    schedule = HalvingSchedule(1e-3, samples_per_step=1000, halve_every_samples=500_000, floor=1e-5)
    rate = {step: float(schedule(step).numpy()) for step in (0, 499, 500, 1000, 1499, 1500, 100_000)}
    assert rate[0] == pytest.approx(1e-3) and rate[499] == pytest.approx(1e-3)
    assert rate[500] == pytest.approx(5e-4) and rate[1000] == pytest.approx(2.5e-4)
    assert rate[1500] == pytest.approx(1.25e-4)
    assert rate[100_000] == pytest.approx(1e-5)
    assert HalvingSchedule.from_config(schedule.get_config()).get_config() == schedule.get_config()


def test_the_optimizer_advances_the_schedule_it_reads():
    var = tf.Variable(1.0)
    optimizer = tf.keras.optimizers.Adam(HalvingSchedule(1e-3, 250_000, 500_000, 1e-5))
    for _ in range(3):
        optimizer.apply_gradients([(tf.constant(1.0), var)])
    assert int(optimizer.iterations.numpy()) == 3
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(1e-3 / 2**1)
