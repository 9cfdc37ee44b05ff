"""The original UCluster run's trained model inside this project (``jobs/import_checkpoint.py``), checked number for
number against the original's own TensorFlow 1 graph: ``tests/data/ucluster-original/golden.npz`` holds that graph's
outputs, losses and gradients on 512 jets (its README says how it was made)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import ROOT
from ucluster_spark import errors, store

ORIGINAL = ROOT / "tests/data/ucluster-original"
CHECKPOINT = ORIGINAL / "cluster.ckpt"


def _import(*args) -> int:
    from ucluster_spark.jobs.import_checkpoint import main

    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The original's final model (its run's epoch 199, alpha 5 x 180 = 900), imported once for the module."""
    run_dir = tmp_path_factory.mktemp("original") / "run"
    assert _import(CHECKPOINT, run_dir, "--alpha", 900) == errors.EXIT_OK
    return run_dir


@pytest.fixture(scope="module")
def golden():
    return np.load(ORIGINAL / "golden.npz")


@pytest.mark.portable
def test_the_imported_run_is_a_finished_run_that_names_its_checkpoint(imported):
    layout = store.RunLayout(imported)
    metrics = store.read_json(layout.metrics)
    assert metrics["imported_from"]["checkpoint"] == str(store.local_path(CHECKPOINT))
    assert metrics["imported_from"]["global_step"] == 118200
    assert metrics["data"] is None and store.trained_dataset(metrics) is None
    assert store.read_json(layout.history)[-1]["alpha"] == 900
    cfg = store.read_json(layout.model_config)
    assert cfg["model"]["mask_padding"] is False and cfg["loss"]["focal_epsilon"] == 1e-9
    assert not any(p.name.startswith(".") for p in imported.parent.iterdir())  # no staging left behind


@pytest.mark.portable
def test_inference_reproduces_the_original_graph(imported, golden):
    """Inference mode (moving statistics): z, the squared distances to the centroids and the auxiliary logits.
    Measured: z within 4.2e-7, distances 3.1e-7, logits 2.6e-4 of logits up to ~|30| (float32 rounding of sums taken
    in another order; the same on every jet, including jets shorter than the 10 neighbours). The tolerances are
    about 3x that. Before the padded rows were pushed in the first kNN search as the original pushes them, 44 of
    the 512 jets differed by up to 2e-3 in z: a padded slot sees its real neighbours at 1000 + d, where float32 keeps
    d only to ~6e-5, so ties among the particles nearest the jet axis go to the lowest slot."""
    from ucluster_spark.executor.inference import load_run

    _, model = load_run(imported)
    np.testing.assert_array_equal(model.centroids.numpy(), golden["mu"])
    out = model(tf.constant(golden["inputs"]), training=False)
    np.testing.assert_allclose(out["z"].numpy(), golden["eval_z"], rtol=0, atol=1.5e-6)
    np.testing.assert_allclose(out["distances"].numpy(), golden["eval_distances"], rtol=0, atol=1e-6)
    logits = golden["eval_logits"]
    np.testing.assert_allclose(out["aux_logits"].numpy()[:, 0], logits, rtol=0, atol=3e-5 * np.abs(logits).max())


@pytest.mark.portable
def test_training_mode_losses_and_every_gradient_reproduce_the_original_graph(imported, golden):
    """Training mode (batch statistics over the 512 jets x 100 slots, padding included as the original counts it),
    alpha 10, the loss this project trains with (its focal and clustering terms, weights 1 and 10).

    Measured: z within 3.8e-5; focal 11.369011 vs 11.368995, clustering 0.0158972 vs 0.0158974 (1e-5), total
    within 1.3e-6. The focal loss is this large because the original's batch-norm statistics do not fit these
    jets: many jets get p ~ 0, and only the original's epsilon (1e-9, ``loss.focal_epsilon``) caps their loss at
    -log(1e-9); the exact log-softmax form gives 11.587 (2 %). Gradients: within 5.1e-4 of the largest gradient
    entry (6.89) everywhere, and within 0.63 % for every tensor whose gradient is above 1e-3 of that. That is float32
    conditioning, not a difference of function: the same model's own gradients move by 0.1 % and z by 4.6e-5 when
    its inputs are perturbed by one float32 rounding (1.2e-7 relative), and a batch-norm statistic summed over
    512,000 entries in another order is such a perturbation. The tolerances are 2x the measured differences.
    The biases the original has before a batch norm are folded into the moving mean: their gradient in the
    original is zero but for rounding (checked), and this model has no such variable."""
    from ucluster_spark.config import Config
    from ucluster_spark.executor.inference import load_run
    from ucluster_spark.executor.losses import mass_bin
    from ucluster_spark.executor.original import _weight_key, variable_map
    from ucluster_spark.executor.terms import StepView
    from ucluster_spark.executor.terms.clustering import clustering
    from ucluster_spark.executor.terms.focal import focal

    cfg, model = load_run(imported)
    np.testing.assert_array_equal(mass_bin(golden["mass"], 20, 200.0).numpy(), golden["mass_bins"])
    batch = {"constituents": tf.constant(golden["inputs"]), "mass": tf.constant(golden["mass"])}
    with tf.GradientTape() as tape:
        out = model(batch["constituents"], training=True)
        view = StepView(batch, out, model.centroids, tf.constant(float(golden["alpha"])), cfg)
        focal_loss, clustering_loss = focal(view), clustering(view).loss
        total = cfg.loss.focal_weight * focal_loss + cfg.loss.clustering_weight * clustering_loss
    gradients = dict(zip((id(v) for v in model.trainable_variables),
                         tape.gradient(total, model.trainable_variables), strict=True))  # fmt: skip

    np.testing.assert_allclose(out["z"].numpy(), golden["train_z"], rtol=0, atol=8e-5)
    np.testing.assert_allclose(float(focal_loss), float(golden["train_focal_loss"]), rtol=3e-6)
    np.testing.assert_allclose(float(clustering_loss), float(golden["train_clustering_loss"]), rtol=3e-5)
    np.testing.assert_allclose(float(total), float(golden["train_total_loss"]), rtol=3e-6)

    layers = {layer.name: layer for layer in model.backbone.layers}
    pairs = [(model.centroids, "mu")]
    for layer_name, sources in variable_map(Config.from_dict(model.cfg_dict)).items():
        pairs += [(w, sources[_weight_key(w, layer_name)][0]) for w in layers[layer_name].trainable_weights]
    assert len(pairs) == len(model.trainable_variables)
    largest = max(float(np.abs(golden[f"grad/{name}"]).max()) for _, name in pairs)
    for variable, name in pairs:
        ours, theirs = gradients[id(variable)].numpy(), golden[f"grad/{name}"].reshape(variable.shape)
        error, scale = float(np.abs(ours - theirs).max()), float(np.abs(theirs).max())
        assert error <= 1e-3 * largest, f"gradient of {name}: off by {error} (largest entry {largest})"
        if scale > 1e-3 * largest:
            assert error <= 0.0125 * scale, f"gradient of {name}: off by {error}, {error / scale:.2%} of {scale}"
    folded = [k for k in golden.files if k.startswith("grad/") and k.endswith("/biases")
              and k.removeprefix("grad/") not in {name for _, name in pairs}]  # fmt: skip
    assert sorted(folded) == [f"grad/{s}/biases" for s in ("agg", "gapnet01", "gapnet02", "gapnet11", "gapnet12")]
    assert all(float(np.abs(golden[k]).max()) <= 1e-5 * largest for k in folded)


def _write_checkpoint(prefix, values: dict) -> None:
    """A checkpoint with exactly these variables by name, as TensorFlow 1 code writes them."""
    names = sorted(values)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(values[n]) for n in names])  # fmt: skip


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda v: v.update(mu=np.zeros((4, 3), np.float32)), "variable mu has shape [4, 3], this model needs [3, 3]"),
        (lambda v: v.pop("agg/weights"), "variable agg/weights is missing"),
        (lambda v: v.pop("gapnet11/biases"), "variable gapnet11/biases is missing"),
        (
            lambda v: v.update({"gapnet01/weights": np.zeros((1, 1, 16, 64), np.float32)}),
            "variable gapnet01/weights has shape [1, 1, 16, 64], this model needs [24, 64]",
        ),
    ],
)
@pytest.mark.portable
def test_a_checkpoint_that_does_not_fit_is_refused_naming_the_first_mismatch(tmp_path, capsys, change, named):
    from ucluster_spark.executor.original import read_checkpoint

    values = read_checkpoint(CHECKPOINT)
    change(values)
    _write_checkpoint(tmp_path / "bad.ckpt", values)
    assert _import(tmp_path / "bad.ckpt", tmp_path / "run") == errors.EXIT_BAD_INPUT
    assert named in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]


@pytest.mark.portable
def test_a_missing_checkpoint_or_a_finished_run_in_the_way_is_refused(tmp_path, capsys, imported):
    assert _import(tmp_path / "nothing.ckpt", tmp_path / "run") == errors.EXIT_BAD_INPUT
    assert "nothing.ckpt: no checkpoint here" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    before = store.RunLayout(imported).metrics.read_text()
    assert _import(CHECKPOINT, imported) == errors.EXIT_BAD_INPUT
    assert "pass --overwrite" in capsys.readouterr().err
    assert store.RunLayout(imported).metrics.read_text() == before


@pytest.mark.portable
def test_the_imported_model_exports_as_the_original_assigns(imported, golden, tmp_path):
    from ucluster_spark.executor.export import export_saved_model

    described = export_saved_model(imported, tmp_path / "saved")
    assert described["alpha"] == 900
    serve = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
    result = serve(constituents=tf.constant(golden["inputs"]))
    np.testing.assert_array_equal(result["cluster"].numpy(), golden["eval_distances"].argmin(axis=1))


@pytest.mark.portable
@pytest.mark.slow
def test_the_imported_model_assigns_a_dataset_with_the_evaluate_job(spark, imported, synthetic_dataset, tmp_path):
    """evaluate runs on an imported model unchanged, given the jets (the model names no dataset of its own)."""
    from ucluster_spark.driver.evaluate import evaluate

    with pytest.raises(errors.InputMissing, match="give --data DATASET"):
        evaluate(spark, imported, None, tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
    root, info, frame = synthetic_dataset
    result = evaluate(spark, imported, root, tmp_path / "out")
    assert result["n_jets"] == len(frame)
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["model"] == str(imported) and sum(written["cluster_sizes"]) == result["n_jets"]


@pytest.mark.portable
def test_training_can_start_from_the_imported_model_when_its_weights_fit(imported, tmp_path):
    """``train.init_from``: checked on the driver before any rank starts. The settings that shape the weights must
    agree; the padding masking, the loss and the schedule may differ from the run the weights come from."""
    from ucluster_spark import config
    from ucluster_spark.driver.warm_start import check_init_from

    check_init_from(config.load(None, [f"train.init_from={imported}", "model.mask_padding=false"]))
    check_init_from(config.load(None, [f"train.init_from={imported}", "loss.balance_weight=1"]))
    with pytest.raises(errors.ConfigError, match=r"its model has model.mlp1=\[64, 128\], this run \[16, 32\]"):
        check_init_from(config.load(None, [f"train.init_from={imported}", "model.mlp1=[16,32]"]))
    with pytest.raises(errors.ConfigError, match="data.max_constituents=100, this run 50"):
        check_init_from(config.load(None, [f"train.init_from={imported}", "data.max_constituents=50"]))
    with pytest.raises(errors.InputMissing, match="not a finished run"):
        check_init_from(config.load(None, [f"train.init_from={tmp_path}"]))


@pytest.mark.slow  # one launch, in the default environment only: the rank's start is the same for both launchers
def test_a_run_started_from_another_runs_weights_starts_where_that_run_ended(
    spark, synthetic_dataset, two_rank_run, tmp_path
):
    """``train.init_from`` on two ranks: without pre-training the clustering phase starts from the source run's own
    centroids (no k-means), and at a learning rate too small to move anything one epoch ends where the source run
    ended — its weights and centroids reached every rank."""
    from tests.conftest import STACK, TINY, TWO_RANKS
    from ucluster_spark import config
    from ucluster_spark.driver.launcher import train
    from ucluster_spark.executor.inference import load_run

    source, _ = two_rank_run(STACK[0].split("=")[1])
    overrides = [f"data.path={synthetic_dataset[0]}", f"run.output={tmp_path / 'run'}", *TINY, *TWO_RANKS, *STACK,
                 f"train.init_from={source}", "train.pretrain_epochs=0", "train.epochs=1",
                 "train.learning_rate=1e-12", "train.lr_floor=1e-12"]  # fmt: skip
    result = train(spark, config.load(ROOT / "conf/local.yaml", overrides))
    started = store.read_json(store.RunLayout(source).metrics)["centroids"]
    np.testing.assert_allclose(result.metrics["centroids"], started, rtol=0, atol=1e-9)
    (_, ours), (_, theirs) = load_run(tmp_path / "run"), load_run(source)
    for a, b in zip(ours.trainable_weights, theirs.trainable_weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-9, err_msg=a.name)
    accuracies = [r["metrics"]["clustering_accuracy"] for r in result.rank_results]
    assert accuracies == [result.metrics["clustering_accuracy"]] * 2
