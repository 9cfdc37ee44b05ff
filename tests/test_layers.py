from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from ucluster_spark import config
from ucluster_spark.executor.layers import (
    GAPLayer,
    MaskedPooling,
    NeighbourGraph,
    ParticleDense,
    StepSeededDropout,
    gather_rows,
    knn_indices,
    particle_mask,
    particle_rows,
    scatter_rows,
)
from ucluster_spark.executor.losses import clustering_loss_per_jet, focal_loss, mass_bin
from ucluster_spark.executor.model import build_model

pytestmark = pytest.mark.portable  # no horovod, no petastorm: also in the current-releases environment

DATA = Path(__file__).parent / "data"
SMALL = ["model.mlp1=[8,16]", "model.gap2_features=16", "model.mlp2=[16,16]", "model.aux_hidden=[16,8]",
         "data.max_constituents=30"]  # fmt: skip


def _jets(batch=4, slots=30, real=(12, 7, 20, 3), features=8, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((batch, slots, features), np.float32)
    for b, n in enumerate(real):
        x[b, :n] = rng.normal(size=(n, features))
    return x


def test_padded_particles_are_never_neighbours_of_real_ones():
    x = _jets()
    mask = particle_mask(tf.constant(x))
    idx = knn_indices(tf.constant(x[..., :2]), mask, k=5).numpy()
    for b, n in enumerate((12, 7, 20, 3)):
        chosen = idx[b, :n, : min(5, n)]
        assert chosen.max() < n
        assert np.array_equal(idx[b, :n, 0], np.arange(n))  # each particle is its own nearest neighbour


def test_gap_layer_shapes_and_zero_padding():
    x = tf.constant(_jets())
    mask = particle_mask(x)
    graph = NeighbourGraph(5)([x[..., :2], mask])
    att, local = GAPLayer(16, 5)([x, *graph, mask], training=False)
    assert att.shape == local.shape == (4, 30, 16)
    assert np.all(att.numpy()[3, 3:] == 0) and np.all(local.numpy()[3, 3:] == 0)
    assert np.all(np.isfinite(local.numpy()))


def test_packed_rows_are_the_real_particles_and_their_neighbours():
    x = tf.constant(_jets())
    mask = particle_mask(x)
    rows = particle_rows(mask)
    assert rows.shape == (12 + 7 + 20 + 3, 2)
    np.testing.assert_array_equal(scatter_rows(gather_rows(x, rows), rows, mask).numpy(), x.numpy())
    slots, slot_mask = NeighbourGraph(5)([x[..., :2], mask])
    neighbours, neighbour_mask = NeighbourGraph(5)([x[..., :2], mask, rows])
    jet, slot = rows.numpy().T
    # The same neighbours as slot indices, now as rows of the same jet; a missing one (the 3-particle jet) is the
    # particle itself, masked.
    np.testing.assert_array_equal(neighbour_mask.numpy(), slot_mask.numpy()[jet, slot])
    real = neighbour_mask.numpy() > 0
    np.testing.assert_array_equal(rows.numpy()[neighbours.numpy()[real]][:, 1], slots.numpy()[jet, slot][real])
    np.testing.assert_array_equal(jet[neighbours.numpy()], np.repeat(jet[:, None], 5, axis=1))
    np.testing.assert_array_equal(neighbours.numpy()[~real], np.nonzero(~real)[0])
    assert (~real).sum() == 3 * 2  # 3 particles with 2 missing neighbours each


def _loss_and_gradients(model, x, mass, cfg):
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        target = mass_bin(mass[:, None], cfg.data.mass_bins, cfg.data.mass_bin_edges_max)
        loss = focal_loss(target, out["aux_logits"], 2.0)
        loss += 10.0 * tf.reduce_mean(clustering_loss_per_jet(out["z"], model.centroids, 10.0))
    return out, loss, tape.gradient(loss, model.trainable_variables)


def _assert_close_per_tensor(ours, reference, rtol):
    """Each tensor within ``rtol`` of the reference, relative to that tensor's largest entry, plus 1e-5 of the
    largest entry of all for tensors that are zero but for rounding (the gradient of a bias that a batch norm
    follows, whose rounding noise differs between TensorFlow builds): sums taken in another order differ in the
    last bits."""
    floor = 1e-5 * max(float(np.abs(b).max()) for b in reference)
    for i, (a, b) in enumerate(zip(ours, reference, strict=True)):
        error = float(np.abs(np.asarray(a) - b).max())
        assert error <= rtol * float(np.abs(b).max()) + floor, f"tensor {i}: off by {error}"


@pytest.mark.parametrize(
    ("reference", "overrides"),
    [
        ("abcnet_masked_dcfa979.npz", []),
        ("abcnet_masked_dcfa979.npz", ["model.particle_layout=padded"]),
        ("abcnet_asrun_dcfa979.npz", ["model.mask_padding=false"]),
    ],
)
def test_the_model_computes_what_it_computed_before_the_faster_layers(reference, overrides):
    """Reference: written by the model of commit dcfa979 (one product per edge, padded slots everywhere) on eight
    jets of 1 to 30 particles (two with fewer than k = 10), with its weights: the outputs, the loss, every gradient
    and the moving statistics after one training-mode call must come out the same in either particle layout."""
    ref = np.load(DATA / reference)
    cfg = config.load(None, [*SMALL, *overrides])
    model = build_model(cfg)
    model.set_weights([ref[k] for k in sorted(ref.files) if k.startswith("weight_")])
    x, mass = ref["x"], ref["mass"]
    evaluated = model(x, training=False)
    np.testing.assert_allclose(evaluated["z"].numpy(), ref["z_eval"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(evaluated["aux_logits"].numpy(), ref["aux_eval"], rtol=1e-5, atol=1e-5)
    out, loss, grads = _loss_and_gradients(model, x, mass, cfg)
    np.testing.assert_allclose(out["z"].numpy(), ref["z_train"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(loss), float(ref["loss"]), rtol=1e-5)
    _assert_close_per_tensor([g.numpy() for g in grads], [ref[k] for k in sorted(ref.files) if k.startswith("grad_")],
                             rtol=1e-4)  # fmt: skip
    _assert_close_per_tensor(model.get_weights(), [ref[k] for k in sorted(ref.files) if k.startswith("after_")], 1e-5)


@pytest.mark.parametrize("pooling", ["mean_all_slots", "mean_real", "max_real"])
def test_packed_and_padded_layouts_agree(pooling):
    """Rows of real particles only, or every slot with the padding masked: the same numbers (up to the order of
    sums), in every pooling, also for jets with fewer particles than neighbours."""
    packed = build_model(config.load(None, [*SMALL, f"model.embedding_pooling={pooling}"]))
    padded = build_model(config.load(None, [*SMALL, f"model.embedding_pooling={pooling}",
                                            "model.particle_layout=padded"]))  # fmt: skip
    padded.set_weights(packed.get_weights())
    x = _jets(real=(12, 7, 30, 3), seed=5)
    mass = np.array([80.0, 91.0, 173.0, 20.0], np.float32)
    cfg = config.load(None, SMALL)
    results = [_loss_and_gradients(model, x, mass, cfg) for model in (packed, padded)]
    (out_a, loss_a, grads_a), (out_b, loss_b, grads_b) = results
    np.testing.assert_allclose(out_a["z"].numpy(), out_b["z"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-6)
    _assert_close_per_tensor([g.numpy() for g in grads_a], [g.numpy() for g in grads_b], rtol=1e-4)
    _assert_close_per_tensor(packed.get_weights(), padded.get_weights(), rtol=1e-5)  # the moving statistics
    np.testing.assert_allclose(packed(x, training=False)["z"].numpy(), padded(x, training=False)["z"].numpy(),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    "layer",
    [
        GAPLayer(8, 3, 0.8, name="g"),
        NeighbourGraph(4, mask_neighbours=False, name="n"),
        ParticleDense(5, 0.7, name="p"),
        MaskedPooling("max_real", name="m"),
        StepSeededDropout(0.2, seed=5, name="d"),
    ],
)
def test_layers_round_trip_their_config(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_dropout_masks_follow_the_saved_call_count_not_the_process():
    x = tf.ones((64, 32))
    layer = StepSeededDropout(0.25, seed=3)
    first, second = layer(x, training=True).numpy(), layer(x, training=True).numpy()
    assert int(layer.calls.numpy()) == 2
    assert not np.array_equal(first, second)  # a new mask every step
    np.testing.assert_allclose(np.unique(first), [0.0, 1 / 0.75], rtol=1e-6)  # kept values rescaled
    assert abs((first == 0).mean() - 0.25) < 0.05
    resumed = StepSeededDropout(0.25, seed=3)  # a new process restoring the count from a checkpoint
    resumed.build(x.shape)
    resumed.set_weights([np.int64(1)])
    np.testing.assert_array_equal(resumed(x, training=True).numpy(), second)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())  # inference: identity, no count
    assert int(layer.calls.numpy()) == 2


def test_model_outputs_and_permutation_invariance_of_the_embedding():
    cfg = config.load(
        None,
        [
            "model.mlp1=[8,16]",
            "model.gap2_features=16",
            "model.mlp2=[16,16]",
            "model.aux_hidden=[16,8]",
            "data.max_constituents=30",
        ],
    )
    model = build_model(cfg)
    x = _jets()
    out = model(x, training=False)
    assert out["z"].shape == (4, 3) and out["aux_logits"].shape == (4, 1, 20) and out["distances"].shape == (4, 3)
    perm = x.copy()
    perm[0, :12] = x[0, np.random.default_rng(3).permutation(12)]
    np.testing.assert_allclose(model(perm, training=False)["z"].numpy()[0], out["z"].numpy()[0], rtol=1e-4, atol=1e-5)


def test_one_aux_output_per_target_column():
    cfg = config.load(
        None,
        [
            "model.mlp1=[8,16]",
            "model.gap2_features=16",
            "model.mlp2=[16,16]",
            "data.max_constituents=30",
            "data.aux_mass_columns=[mass,sd_mass]",
        ],
    )
    assert build_model(cfg)(_jets(), training=False)["aux_logits"].shape == (4, 2, 20)


@pytest.mark.parametrize("pooling", ["mean_real", "mean_all_slots"])
def test_extra_zero_padded_slots_change_the_embedding_only_through_the_slot_count(pooling):
    sizes = ["model.mlp1=[8,16]", "model.gap2_features=16", "model.mlp2=[16,16]", "model.aux_hidden=[16,8]"]
    sizes.append(f"model.embedding_pooling={pooling}")
    small = build_model(config.load(None, [*sizes, "data.max_constituents=30"]))
    large = build_model(config.load(None, [*sizes, "data.max_constituents=50"]))
    large.set_weights(small.get_weights())  # no weight depends on the number of slots
    x = _jets()
    padded = np.concatenate([x, np.zeros((4, 20, 8), np.float32)], axis=1)
    # Over real particles z ignores padding; over all slots (the original) it is the sum over particles / slots.
    scale = 30 / 50 if pooling == "mean_all_slots" else 1.0
    np.testing.assert_allclose(
        large(padded, training=False)["z"].numpy(), scale * small(x, training=False)["z"].numpy(), rtol=1e-5, atol=1e-6
    )


def test_default_structure_is_the_original_as_run():
    model = build_model(config.load(None))
    backbone = model.backbone
    # The embedding convolution reads every intermediate layer and both local features: 848 channels.
    assert backbone.get_layer("skip").output.shape[-1] == 64 + 128 + 256 + 256 + 16 + 128 == 848
    # The second MLP reads [raw features, GAPLayer 2], not the earlier layers.
    assert backbone.get_layer("gap2_out").output.shape[-1] == 8 + 128
    assert backbone.get_layer("z").mode == "mean_all_slots"
    names = [layer.name for layer in backbone.layers]
    assert {"aux_norm_0", "aux_norm_1"} <= set(names)  # batch norm in the head's hidden layers
    assert not any(isinstance(layer, StepSeededDropout) for layer in backbone.layers)  # no dropout
    # GAPLayer internals: batch norm on the self features, both attention logits and the edge features.
    gap = backbone.get_layer("gap1")
    norms = {layer.name for layer in gap.submodules if isinstance(layer, tf.keras.layers.BatchNormalization)}
    assert norms == {"self_norm", "self_logit_norm", "edge_norm", "neighbour_logit_norm"}
    assert model.centroids.shape == (3, 3)


def test_a_wider_embedding_and_its_centroids():
    cfg = config.load(None, ["model.embedding_dim=5", "model.mlp1=[8,16]", "model.gap2_features=16",
                             "model.mlp2=[16,16]", "data.max_constituents=30"])  # fmt: skip
    model = build_model(cfg)
    out = model(_jets(), training=False)
    assert out["z"].shape == (4, 5) and model.centroids.shape == (3, 5) and out["distances"].shape == (4, 3)


def test_one_momentum_variable_drives_every_batch_norm(tmp_path):
    from ucluster_spark.executor.layers import share_batch_norm_momentum

    model_cfg = config.load(None, ["model.mlp1=[8,16]", "model.gap2_features=16", "model.mlp2=[16,16]",
                                   "data.max_constituents=30"])  # fmt: skip
    model = build_model(model_cfg)
    momentum = tf.Variable(0.0)
    shared = share_batch_norm_momentum(model, momentum)
    assert shared == 4 * 2 + 2 + 2 + 1 + 2  # two GAPLayers, the MLPs, the embedding conv, the head
    norm = model.backbone.get_layer("embedding_conv").norm
    x = _jets()

    @tf.function
    def step():
        model(x, training=True)

    step()  # momentum 0: the moving mean becomes the batch mean
    first = norm.moving_mean.numpy().copy()
    momentum.assign(1.0)  # momentum 1: the same traced function now leaves it alone
    step()
    np.testing.assert_array_equal(norm.moving_mean.numpy(), first)
    assert not np.allclose(first, 0.0)
    # Sharing adds no weight: a model saved while training reloads into one built for inference.
    assert len(model.weights) == len(build_model(model_cfg).weights)
    path = str(tmp_path / "weights.h5")
    model.save_weights(path)
    fresh = build_model(model_cfg)
    fresh.load_weights(path)
    np.testing.assert_array_equal(fresh.backbone.get_layer("embedding_conv").norm.moving_mean.numpy(), first)


def test_a_short_training_on_tiny_data_lowers_the_loss():
    from tests.conftest import synthetic_jets
    from ucluster_spark.executor.losses import clustering_loss_per_jet, focal_loss, mass_bin

    tf.random.set_seed(0)
    cfg = config.load(
        None,
        [
            "model.mlp1=[16,16]",
            "model.gap2_features=16",
            "model.mlp2=[16,16]",
            "model.aux_hidden=[32,16]",
            "data.max_constituents=30",
        ],
    )
    model = build_model(cfg)
    jets = synthetic_jets(20, max_constituents=30)
    x = np.stack(jets["constituents"]).reshape(-1, 30, 8)
    target = mass_bin(jets[["mass"]].to_numpy(np.float32), 20, 200.0)  # (jets, 1 target)
    optimizer = tf.keras.optimizers.Adam(3e-3)

    def loss_value(training):
        out = model(x, training=training)
        return focal_loss(target, out["aux_logits"], 4.0) + tf.reduce_mean(
            clustering_loss_per_jet(out["z"], model.centroids, 1.0)
        )

    before = float(loss_value(False))
    for _ in range(40):
        with tf.GradientTape() as tape:
            loss = loss_value(True)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    assert float(loss_value(False)) < 0.7 * before
