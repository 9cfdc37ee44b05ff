import numpy as np
import pytest
import tensorflow as tf

from ucluster_spark.executor.losses import (
    HalvingSchedule,
    alpha_for_epoch,
    alpha_for_jets,
    balanced_assignment,
    balanced_clustering_loss_per_jet,
    batch_norm_momentum,
    cluster_balance_penalty,
    clustering_loss_per_jet,
    focal_loss,
    mass_bin,
    reduce_clustering_loss,
    schedule_steps,
    soft_assignment,
)

pytestmark = pytest.mark.portable  # no horovod, no petastorm: also in the current-releases environment


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


def test_alpha_is_10_in_the_first_clustering_epoch_then_plus_5():
    values = [alpha_for_epoch(e, pretrain_epochs=3, alpha_start=10.0, alpha_step=5.0) for e in range(7)]
    assert values == [0.0, 0.0, 0.0, 10.0, 15.0, 20.0, 25.0]


def test_alpha_ramps_per_jets_seen_whatever_an_epoch_is():
    # The original's ramp, +5 per epoch of ~306k jets, on a dataset of 21k jets (82 steps of 256 per epoch):
    # alpha climbs by jets seen, so 82 steps of 256 jets move it not at all, and 1,196 steps by one step.
    every = 306_000
    alpha = [alpha_for_jets(steps * 256, 10.0, 5.0, every) for steps in (0, 82, 1195, 1196, 12_000)]
    assert alpha == [10.0, 10.0, 10.0, 15.0, 10.0 + 5.0 * (12_000 * 256 // every)]


def test_learning_rate_halves_on_a_staircase_down_to_the_floor():
    schedule = HalvingSchedule(1e-3, halve_every_steps=500, floor=1e-5)
    rate = {step: float(schedule(step).numpy()) for step in (0, 499, 500, 1000, 1499, 1500, 100_000)}
    assert rate[0] == pytest.approx(1e-3) and rate[499] == pytest.approx(1e-3)
    assert rate[500] == pytest.approx(5e-4) and rate[1000] == pytest.approx(2.5e-4)
    assert rate[1500] == pytest.approx(1.25e-4)
    assert rate[100_000] == pytest.approx(1e-5)
    assert HalvingSchedule.from_config(schedule.get_config()).get_config() == schedule.get_config()


@pytest.mark.parametrize("steps_per_epoch", [3, 600])
def test_schedules_reach_their_floor_at_the_same_point_of_pretraining_on_any_dataset_size(steps_per_epoch):
    # The original: 21 pre-training epochs of ~600 steps, halving every 500k samples (0.08 of pre-training):
    # 1e-3 reaches 1e-5 after 7 halvings, in epoch 11; batch-norm momentum 0.5 reaches 0.99 after 6.
    pretrain = 21
    period = schedule_steps(0.08, pretrain, steps_per_epoch)
    lr = HalvingSchedule(1e-3, period, 1e-5)
    epoch_of_floor = next(e for e in range(40) if float(lr(e * steps_per_epoch).numpy()) == pytest.approx(1e-5))
    assert epoch_of_floor == 12  # 7 x 0.08 x 21 = 11.76 epochs: the floor holds from epoch 12 on
    momentum = [float(batch_norm_momentum(e * steps_per_epoch, 0.5, 0.99, period)) for e in range(pretrain)]
    assert momentum[0] == pytest.approx(0.5) and momentum[2] == pytest.approx(0.75)
    assert next(e for e, m in enumerate(momentum) if m == pytest.approx(0.99)) == 11  # 6 x 1.68 = 10.1 epochs
    assert max(momentum) == pytest.approx(0.99)


def test_without_pretraining_the_schedules_start_at_their_floor():
    period = schedule_steps(0.08, 0, 100)
    assert float(HalvingSchedule(1e-3, period, 1e-5)(1)) == pytest.approx(1e-5)
    assert float(batch_norm_momentum(1, 0.5, 0.99, period)) == pytest.approx(0.99)


def test_balance_penalty_is_zero_for_an_even_batch_and_log_k_for_one_cluster():
    centroids = np.eye(3, dtype=np.float32)
    even = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)  # 4 jets on each centroid
    lumped = np.repeat(np.eye(3, dtype=np.float32)[:1], 12, axis=0)
    dist = lambda z: tf.reduce_sum((z[:, None] - centroids[None]) ** 2, -1)  # noqa: E731
    assert float(cluster_balance_penalty(dist(even), 100.0)) == pytest.approx(0.0, abs=1e-5)
    assert float(cluster_balance_penalty(dist(lumped), 100.0)) == pytest.approx(np.log(3), rel=1e-4)


def test_the_optimizer_advances_the_schedule_it_reads():
    var = tf.Variable(1.0)
    optimizer = tf.keras.optimizers.Adam(HalvingSchedule(1e-3, 2, 1e-5))
    for _ in range(3):
        optimizer.apply_gradients([(tf.constant(1.0), var)])
    assert int(optimizer.iterations.numpy()) == 3
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(1e-3 / 2**1)


@pytest.mark.parametrize("balance_weight, beta", [(0.0, 10.0), (2.0, 10.0), (2.0, 0.0)])
def test_the_train_step_sums_its_terms_with_their_weights(balance_weight, beta):
    """As run (no balance prior, beta = 10): L = 1 x focal(gamma 2) + 10 x mean clustering loss, recomputed by hand
    from the same forward pass; a term of the clustering phase (the balance prior) adds its weight times its value
    while beta > 0, and nothing in pre-training (beta = 0)."""
    from tests.conftest import synthetic_jets
    from ucluster_spark import config
    from ucluster_spark.executor.model import build_model
    from ucluster_spark.executor.rank.step import make_optimizer, make_train_step
    from ucluster_spark.schema import CONSTITUENTS, MASS

    cfg = config.load(None, ["model.mlp1=[8,16]", "model.gap2_features=16", "model.mlp2=[16,16]",
                             "model.aux_hidden=[16,8]", "data.max_constituents=30",
                             f"loss.balance_weight={balance_weight}"])  # fmt: skip
    assert (cfg.loss.focal_gamma, cfg.loss.focal_weight, cfg.loss.clustering_weight) == (2.0, 1.0, 10.0)
    assert cfg.loss.clustering_reduction == "mean"
    tf.keras.utils.set_random_seed(0)
    model = build_model(cfg)
    jets = synthetic_jets(6, max_constituents=30)
    x = np.stack(jets["constituents"]).reshape(-1, 30, 8).astype(np.float32)
    mass = jets["mass"].to_numpy(np.float32)
    out = model(x, training=True)  # training-mode forward: batch statistics, as in the step
    logits, z, mu = out["aux_logits"].numpy()[:, 0], out["z"].numpy(), model.centroids.numpy()
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    target = np.clip(np.digitize(mass, np.linspace(0, 200, 20)) - 1, 0, 19)
    p_true = p[np.arange(len(target)), target]
    focal = np.mean(-((1 - p_true) ** 2) * np.log(p_true))
    alpha = 10.0
    d = ((z[:, None, :] - mu[None]) ** 2).sum(-1)
    w = np.exp(-alpha * (d - d.min(axis=1, keepdims=True)))
    w /= w.sum(axis=1, keepdims=True)
    clustering = np.mean((d * w).sum(axis=1))
    share = w.mean(axis=0)
    balance = np.log(len(share)) + np.sum(share * np.log(share))

    _, optimizer = make_optimizer(cfg, model, workers=1, steps_per_epoch=10)
    step = make_train_step(model, optimizer, cfg, tf.Variable(alpha), tf.Variable(beta))
    losses, _ = step({CONSTITUENTS: tf.constant(x), MASS: tf.constant(mass)}, tf.constant(1.0))
    loss, focal_step, clustering_step, finite = losses.numpy()
    assert finite == 1.0
    assert focal_step == pytest.approx(focal, rel=1e-4)
    assert clustering_step == pytest.approx(clustering, rel=1e-4)
    on = float(beta > 0)
    assert loss == pytest.approx(focal + on * (10.0 * clustering + balance_weight * balance), rel=1e-4)


def _tiny_step(update, **train):
    from tests.conftest import synthetic_jets
    from ucluster_spark import config
    from ucluster_spark.executor.model import build_model
    from ucluster_spark.executor.rank.step import make_optimizer, make_train_step
    from ucluster_spark.schema import CONSTITUENTS, MASS

    cfg = config.load(None, ["model.mlp1=[8,16]", "model.gap2_features=16", "model.mlp2=[16,16]",
                             "model.aux_hidden=[16,8]", "data.max_constituents=30", f"train.centroid_update={update}",
                             *[f"train.{k}={v}" for k, v in train.items()]])  # fmt: skip
    tf.keras.utils.set_random_seed(0)
    model = build_model(cfg)
    jets = synthetic_jets(6, max_constituents=30)
    batch = {
        CONSTITUENTS: tf.constant(np.stack(jets["constituents"]).reshape(-1, 30, 8).astype(np.float32)),
        MASS: tf.constant(jets["mass"].to_numpy(np.float32)),
    }
    _, optimizer = make_optimizer(cfg, model, workers=1, steps_per_epoch=10)
    beta = tf.Variable(0.0)
    return model, make_train_step(model, optimizer, cfg, tf.Variable(10.0), beta), batch, beta


@pytest.mark.parametrize("update", ["adam", "sgd", "kmeans"])
def test_the_centroids_move_only_while_the_clustering_loss_is_on(update):
    model, step, batch, beta = _tiny_step(update)
    before = model.centroids.numpy()
    step(batch, tf.constant(1.0))  # pre-training: beta = 0
    np.testing.assert_array_equal(model.centroids.numpy(), before)
    beta.assign(10.0)
    step(batch, tf.constant(1.0))
    assert not np.array_equal(model.centroids.numpy(), before)


def test_the_kmeans_update_puts_each_centroid_on_its_batch_jets_first():
    """With nothing counted yet, the first k-means step sets each centroid to the mean of its nearest jets of the
    batch (the embedding of that same forward pass), and the gradient step leaves the centroids to it."""
    from ucluster_spark.executor.rank.evaluation import nearest_centroid
    from ucluster_spark.schema import CONSTITUENTS

    model, step, batch, beta = _tiny_step("kmeans")
    beta.assign(10.0)
    z = model(batch[CONSTITUENTS], training=True)["z"].numpy()
    model.centroids.assign(z[:3])  # every centroid owns at least one jet
    nearest = nearest_centroid(z, z[:3])
    step(batch, tf.constant(1.0))
    expected = np.stack([z[nearest == k].mean(axis=0) for k in range(3)])
    np.testing.assert_allclose(model.centroids.numpy(), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(model.centroid_counts.numpy(), np.bincount(nearest, minlength=3))


def test_the_sgd_update_is_a_plain_step_of_its_own_rate():
    model, step, batch, beta = _tiny_step("sgd", centroid_learning_rate=0.5)
    beta.assign(10.0)
    before = model.centroids.numpy()
    with tf.GradientTape() as tape:  # the same loss the step differentiates, here for the centroids only
        out = model(batch["constituents"], training=True)
        loss = 10.0 * tf.reduce_mean(clustering_loss_per_jet(out["z"], model.centroids, 10.0))
    gradient = tape.gradient(loss, model.centroids).numpy()
    step(batch, tf.constant(1.0))
    np.testing.assert_allclose(model.centroids.numpy(), before - 0.5 * gradient, rtol=1e-3, atol=1e-7)


def test_the_balanced_assignment_gives_every_cluster_an_equal_share_of_the_batch():
    # 9 jets, 8 of them near centroid 0: the softmax puts 8/9 of the batch there; Sinkhorn evens the columns out.
    rng = np.random.default_rng(0)
    centroids = tf.constant([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    z = tf.constant(np.concatenate([rng.normal(0.0, 0.1, (8, 2)), [[1.0, 0.0]]]), tf.float32)
    distances = tf.reduce_sum((z[:, None] - centroids[None]) ** 2, -1)
    q = balanced_assignment(distances, 5.0, iterations=50).numpy()
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(q.sum(axis=0), 3.0, rtol=1e-3)
    assert soft_assignment(distances, 5.0).numpy()[:, 0].sum() > 6.0
    with tf.GradientTape() as tape:  # the target is held fixed: gradients only through the distances
        tape.watch(z)
        loss = tf.reduce_sum(balanced_clustering_loss_per_jet(z, centroids, 5.0, 3))
    d = (z.numpy()[:, None] - centroids.numpy()[None]) ** 2
    q3 = balanced_assignment(distances, 5.0, 3).numpy()
    assert float(loss) == pytest.approx(float((d.sum(-1) * q3).sum()), rel=1e-5)
    expected = 2 * (q3[:, :, None] * (z.numpy()[:, None] - centroids.numpy()[None])).sum(axis=1)
    np.testing.assert_allclose(tape.gradient(loss, z).numpy(), expected, rtol=1e-4, atol=1e-6)
