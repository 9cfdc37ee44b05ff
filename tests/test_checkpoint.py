"""Checkpoints in-process with a real (small) model and optimizer: round trip, and a crash while writing."""

import numpy as np
import pytest
import tensorflow as tf

from ucluster_spark import checkpoint, config
from ucluster_spark.executor.model import build_model

pytestmark = pytest.mark.portable  # no horovod, no petastorm: also in the current-releases environment

SMALL = ["model.mlp1=[8,16]", "model.gap2_features=16", "model.mlp2=[16,16]", "data.max_constituents=30"]


def _trained_pair():
    model = build_model(config.load(None, SMALL))
    optimizer = tf.keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    x = tf.random.stateless_normal((4, 30, 8), seed=(1, 2))
    for _ in range(3):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = tf.reduce_mean(out["distances"]) + tf.reduce_mean(tf.square(out["aux_logits"]))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return model, optimizer


def test_restore_brings_back_weights_centroids_and_optimizer_state(tmp_path):
    model, optimizer = _trained_pair()
    state = checkpoint.TrainingState(3, [{"epoch": e} for e in range(3)], num_proc=2)
    saved = checkpoint.save(tmp_path, model, optimizer, state)
    assert checkpoint.latest(tmp_path) == saved and saved.name == "epoch-0003"
    assert checkpoint.read_state(saved) == state

    fresh = build_model(config.load(None, SMALL))
    fresh_optimizer = tf.keras.optimizers.Adam(1e-3)
    fresh_optimizer.build(fresh.trainable_variables)
    checkpoint.restore(saved, fresh, fresh_optimizer)
    for a, b in zip(model.variables, fresh.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(fresh_optimizer.iterations) == 3  # the learning-rate schedule reads this counter
    for a, b in zip(optimizer.variables, fresh_optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = _trained_pair()
    first = checkpoint.save(tmp_path, model, optimizer, checkpoint.TrainingState(1, []))

    def crash(*args, **kwargs):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="injected"):
        checkpoint.save(tmp_path, model, optimizer, checkpoint.TrainingState(2, []))
    assert checkpoint.latest(tmp_path) == first
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["LATEST", "epoch-0001"]


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    model, optimizer = _trained_pair()
    for epoch in range(1, 5):
        checkpoint.save(tmp_path, model, optimizer, checkpoint.TrainingState(epoch, []), keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["LATEST", "epoch-0003", "epoch-0004"]


def test_the_end_of_pre_training_is_kept_beside_the_newest(tmp_path):
    model, optimizer = _trained_pair()
    for epoch in range(1, 6):
        checkpoint.save(tmp_path, model, optimizer, checkpoint.TrainingState(epoch, []), keep=2, pinned=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "LATEST", "epoch-0002", "epoch-0004", "epoch-0005",
    ]  # fmt: skip
    assert checkpoint.latest(tmp_path).name == "epoch-0005"


def test_a_damaged_pointer_falls_back_to_the_newest_complete_checkpoint(tmp_path, package_log):
    from ucluster_spark import errors

    model, optimizer = _trained_pair()
    for epoch in (1, 2):
        checkpoint.save(tmp_path, model, optimizer, checkpoint.TrainingState(epoch, []), keep=2)
    (tmp_path / "checkpoints" / "LATEST").write_text("epoch-0009\n")  # names a checkpoint that is not there
    assert checkpoint.latest(tmp_path) == tmp_path / "checkpoints" / "epoch-0002"
    assert "epoch-0009, which is missing or incomplete; using epoch-0002" in package_log.text
    for old in (tmp_path / "checkpoints").glob("epoch-*"):
        (old / checkpoint.STATE).unlink()
    with pytest.raises(checkpoint.CheckpointDamaged, match="no complete checkpoint is left") as err:
        checkpoint.latest(tmp_path)
    assert errors.exit_code_for(err.value) == errors.EXIT_TRAINING_FAILED  # not bad input
