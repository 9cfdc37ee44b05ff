"""The main job for real: spark-submit, Pythia inside Spark tasks, petastorm, 2 Horovod ranks over Gloo."""

import json
import re

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from tests.conftest import ROOT, STACK, TINY, needs_horovod, submit
from ucluster_spark import config, errors, schema, store

pytestmark = pytest.mark.slow
PICTURES = [
    "clustering_by_step.png",
    "confusion_matrix.png",
    "embedding.png",
    "mass_per_cluster.png",
    "training_curves.png",
]


def test_train_job_writes_a_complete_run_directory(finished_run):
    work, run_dir, result = finished_run
    assert f"run directory: {run_dir}" in result.stdout
    assert "clustering accuracy (test," in result.stdout
    output = result.stderr  # progress and the ranks' output: stderr (results alone on stdout)
    assert "[train] epoch 2/2" in output  # per-epoch progress from rank 0
    assert "[simulate] w seed=" in output  # Pythia progress from the Spark tasks
    assert "[train] epoch 2/2" in (run_dir / "train.log").read_text()
    # One console format (time, component, message); no Spark progress bar or petastorm chatter in between.
    log_line = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[(train|launcher|simulate|dataset|sources)\] ")
    assert all(log_line.match(line) for line in (run_dir / "train.log").read_text().splitlines())
    epoch_lines = [line for line in output.splitlines() if re.search(r"\[train\] epoch \d+/\d+ ", line)]
    assert len(epoch_lines) == 2 and all(len(line) <= 160 for line in epoch_lines), epoch_lines  # the record: history
    assert any(log_line.match(line) and "[launcher]" in line for line in output.splitlines())
    assert "[Stage " not in output and "Cache cleanup complete." not in result.stdout + output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # The reported accuracy is the best one-to-one matching of clusters to classes in the reported confusion matrix.
    confusion = np.array(metrics["confusion_matrix"])
    rows, cols = linear_sum_assignment(-confusion)
    assert metrics["clustering_accuracy"] == pytest.approx(confusion[rows, cols].sum() / confusion.sum())
    assert confusion.sum() == metrics["n_jets"]
    assert metrics["n_jets"] == metrics["data"]["n_test"] == sum(metrics["cluster_sizes"])
    assert metrics["num_proc"] == 2
    # A degenerate end (empty cluster, dead embedding dimension, loss far above its start) is said, not hidden.
    assert isinstance(metrics["warnings"], list) and ("DEGENERATE" in result.stdout) == bool(metrics["warnings"])
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    pictures = sorted(p.name for p in (run_dir / "plots").iterdir())
    assert pictures == PICTURES
    assert all((run_dir / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pictures)
    # The schedule defects of the earlier port cannot recur: alpha ramps, and the learning rate and batch-norm
    # momentum follow the optimizer's own step counter in units of pre-training, whatever the dataset size: halving
    # every 0.08 of pre-training, both reach their floor / maximum within it, so on this tiny dataset (3 steps per
    # epoch) too the clustering epoch runs entirely at the floor.
    cfg = config.load(ROOT / "conf/local.yaml")
    alpha = cfg.loss.alpha_start  # the first clustering epoch's
    assert [h["alpha"] for h in history] == [0.0, alpha] and [h["beta"] for h in history] == [0.0, 10.0]
    assert [h["learning_rate"] for h in history] == pytest.approx([cfg.train.lr_floor] * 2)
    assert [h["bn_momentum"] for h in history] == pytest.approx([cfg.train.bn_momentum_max] * 2)
    assert history[1]["global_step"] == 2 * history[0]["global_step"] > 0
    assert history[1]["started_at"] >= history[0]["started_at"] + history[0]["seconds"]  # wall clock, for start-up
    assert not [p for p in run_dir.parent.iterdir() if ".tmp-" in p.name]
    # TensorBoard: every epoch's losses, alpha, learning rate, validation numbers and cluster sizes at its step.
    scalars = tensorboard_scalars(run_dir / "tensorboard")
    for h in history:
        for name in ("loss", "focal_loss", "alpha", "learning_rate", "val_clustering_accuracy", "val_nmi"):
            assert scalars[f"epoch/{name}"][h["global_step"]] == pytest.approx(h[name], rel=1e-6), name
        assert [scalars[f"val_cluster_sizes/{k}"][h["global_step"]] for k in range(3)] == h["val_cluster_sizes"]


def tensorboard_scalars(folder):
    """{tag: {step: value}} of every event file in ``folder`` (TensorFlow's own reader)."""
    import tensorflow as tf

    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(folder.iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return scalars


def test_saved_model_reloads_and_reproduces_the_test_assignment(finished_run):
    from ucluster_spark.executor.model import build_model
    from ucluster_spark.executor.reader import evaluation_batches
    from ucluster_spark.metrics import contingency, summarize

    _, run_dir, _ = finished_run
    layout = store.RunLayout(run_dir)
    cfg = config.Config.from_dict(json.loads(layout.model_config.read_text()))
    model = build_model(cfg)
    model.load_weights(str(layout.weights))
    metrics = json.loads(layout.metrics.read_text())
    clusters, labels = [], []
    with evaluation_batches(
        metrics["data"]["test_url"],
        shard=0,
        shard_count=1,
        max_constituents=100,
        n_features=8,
        batch_size=64,
        columns=[schema.LABEL],
    ) as ds:
        for batch in ds:
            clusters.append(np.argmin(model(batch["constituents"], training=False)["distances"].numpy(), axis=1))
            labels.append(batch["label"].numpy())
    summary = summarize(contingency(np.concatenate(clusters), np.concatenate(labels), 3, 3), ["w", "z", "t"])
    assert summary["confusion_matrix"] == metrics["confusion_matrix"]
    assert summary["clustering_accuracy"] == pytest.approx(metrics["clustering_accuracy"])


def test_a_finished_run_directory_is_refused_before_any_work(finished_run):
    work, run_dir, _ = finished_run
    before = (run_dir / "metrics.json").read_bytes()
    result = submit(
        "--config",
        str(ROOT / "conf/local.yaml"),
        "--output",
        str(run_dir),
        f"data.generated_root={work / 'refused'}",
        *TINY,
        cwd=work,
    )
    assert result.returncode == errors.EXIT_BAD_INPUT
    assert f"{run_dir} already holds a finished run" in result.stderr  # stderr under spark-submit too
    assert "error:" not in result.stdout
    assert not (work / "refused").exists()
    assert (run_dir / "metrics.json").read_bytes() == before


def test_a_frozen_then_a_killed_rank_fail_the_job_and_the_run_resumes_from_its_checkpoint(finished_run):
    """One run, two failures at the first step of epoch 2 (after the epoch-1 checkpoint), then its end. First rank 1
    is SIGSTOPped, not killed: its peer's sockets stay open, so only its collectives' timeout notices, and the
    driver then stops every rank instead of waiting for the frozen one forever. Resumed, rank 1 SIGKILLs itself
    there. Resumed again, the run ends number for number as the uninterrupted one."""
    import psutil

    from ucluster_spark.executor.rank.environment import FAULT_ENV

    work, uninterrupted, _ = finished_run
    run_dir = work / "interrupted"
    args = ["--output", str(run_dir), f"data.generated_root={work / 'generated'}", *TINY]
    frozen = submit(
        "--config", str(ROOT / "conf/local.yaml"), *args, "run.failure_grace_seconds=5",
        cwd=work, extra_env={FAULT_ENV: "stop:1:1:1", "HOROVOD_GLOO_TIMEOUT_SECONDS": "10"}, timeout=300,
    )  # fmt: skip
    assert frozen.returncode == errors.EXIT_TRAINING_FAILED, frozen.stdout[-3000:] + frozen.stderr[-3000:]
    output = frozen.stdout + frozen.stderr
    assert "rank 0 on" in output and "failed: " in output
    assert "were stopped by the driver: a rank stopped responding" in output
    assert f"continue from checkpoint epoch-0001 with --resume {run_dir}" in output
    report = json.loads((run_dir / "failures" / "rank-0.json").read_text())
    assert report["rank"] == "0" and report["error"]
    stopped = [
        p.pid
        for p in psutil.process_iter(["status", "cmdline"])
        if p.info["status"] == psutil.STATUS_STOPPED and "gloo_exec_fn" in " ".join(p.info["cmdline"] or [])
    ]
    assert stopped == []  # the stopped rank was killed, not left behind

    killed = submit("--resume", str(run_dir), cwd=work, extra_env={FAULT_ENV: "kill:1:1:0"}, timeout=300)
    assert killed.returncode == errors.EXIT_TRAINING_FAILED
    output = killed.stdout + killed.stderr
    assert "exit code 137: the rank was killed" in output
    assert f"continue from checkpoint epoch-0001 with --resume {run_dir}" in output
    assert not (run_dir / "metrics.json").exists()
    assert (run_dir / "checkpoints" / "LATEST").read_text().strip() == "epoch-0001"
    saved = json.loads((run_dir / "checkpoints" / "epoch-0001" / "state.json").read_text())

    refused = submit("--config", str(ROOT / "conf/local.yaml"), *args, cwd=work)
    assert refused.returncode == errors.EXIT_BAD_INPUT
    assert f"{run_dir} holds an unfinished run (last checkpoint epoch-0001)" in refused.stderr

    resumed = submit("--resume", str(run_dir), cwd=work)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-6000:]
    assert "resumed from" in (run_dir / "train.log").read_text()
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    pictures = sorted(p.name for p in (run_dir / "plots").iterdir())
    assert pictures == PICTURES
    assert all((run_dir / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pictures)
    assert history[0] == saved["history"][0]  # the first epoch is the checkpoint's, not retrained
    curves = tensorboard_scalars(run_dir / "tensorboard")["epoch/loss"]  # one event file per attempt, no epoch twice
    assert curves == {h["global_step"]: pytest.approx(h["loss"], rel=1e-6) for h in history}
    alpha = config.load(ROOT / "conf/local.yaml").loss.alpha_start
    assert [h["alpha"] for h in history] == [0.0, alpha]  # the schedule continues where it stopped
    assert history[1]["global_step"] == 2 * history[0]["global_step"]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["LATEST", "epoch-0001", "epoch-0002"]
    # The same configuration and data as the uninterrupted run: the same run, number for number (data order, dropout
    # masks, optimizer and schedule state are all functions of the seed, the epoch and the step).
    reference = json.loads((uninterrupted / "history.json").read_text())
    keys = ("loss", "focal_loss", "clustering_loss_per_jet", "global_step", "val_clustering_accuracy", "validations")
    for key in keys:  # validations: incl. the share of jets that changed cluster since the point before the kill
        assert [h.get(key) for h in history] == [h.get(key) for h in reference], key
    final, expected = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, uninterrupted))
    assert (final["confusion_matrix"], final["embedding_mean"]) == (
        expected["confusion_matrix"],
        expected["embedding_mean"],
    )


def test_a_second_run_reuses_the_generated_sample(finished_run, tmp_path):
    from ucluster_spark.data.dataset import generation_key
    from ucluster_spark.data.sources import locate_or_generate
    from ucluster_spark.driver.session import get_session

    work, _, _ = finished_run
    cfg = config.load(ROOT / "conf/local.yaml", [f"data.generated_root={work / 'generated'}", *TINY])
    root = work / "generated" / generation_key(cfg.data)
    stamp = (root / "_ucluster_dataset.json").stat().st_mtime_ns
    found, info = locate_or_generate(get_session("reuse-check"), cfg.data)
    assert found == root and info.n_jets("train") > 0
    assert (root / "_ucluster_dataset.json").stat().st_mtime_ns == stamp


def _train_job():
    from ucluster_spark.jobs import train as train_job

    return train_job


def test_bad_config_exits_with_the_bad_input_code(capsys):
    train_job = _train_job()
    assert train_job.main(["--config", str(ROOT / "conf/local.yaml"), "train.epochs=zero"]) == errors.EXIT_BAD_INPUT
    assert "train.epochs: expected int, got 'zero'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "--config is required (or --resume RUN_DIR)"),
        (["--resume", "{tmp}", "--config", "conf/local.yaml"], "drop --config/--output"),
        (["--resume", "{tmp}"], "not a run directory (no config.yaml)"),
    ],
)
def test_resume_arguments_are_checked_before_any_work(args, message, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in args]
    assert _train_job().main(argv) == errors.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "launcher", [pytest.param("horovod", marks=needs_horovod), pytest.param("barrier", marks=pytest.mark.portable)]
)
def test_ranks_end_with_identical_weights_and_centroids(two_rank_run, synthetic_dataset, launcher):
    """In-process driver, 2 real ranks: broadcast start, averaged gradients and rank-0 k-means agree bit for bit."""
    _, info, _ = synthetic_dataset
    run_dir, result = two_rank_run(launcher)
    first, second = result.rank_results
    assert (first["rank"], second["rank"]) == (0, 1)
    assert first["weights_digest"] == second["weights_digest"]  # every weight, bit for bit
    assert first["centroids"] == second["centroids"]
    assert first["metrics"] == second["metrics"]  # whole-split metrics from summed per-rank counts
    history = json.loads((run_dir / "history.json").read_text())
    assert first["rank_started_at"] < history[0]["started_at"]
    for record in history:  # every training jet once per epoch, split over the two ranks
        assert record["jets_per_second"] * record["seconds"] == pytest.approx(info.n_jets("train"))
    assert result.metrics["n_jets"] == info.n_jets("test") and result.metrics["num_proc"] == 2
    assert all(record["cpu_seconds"] > 0 for record in history)
    # Bound to disjoint shares of the cores (local[2]: one each).
    assert first["cpu_affinity"] and not set(first["cpu_affinity"]) & set(second["cpu_affinity"])
    log = (run_dir / "train.log").read_text()
    assert f"2 rank(s) ({'horovod' if launcher == 'horovod' else 'tf.distribute'})" in log
    assert "each rank bound to" in log and "k-means start from 100 training embeddings: cluster sizes " in log
    curves = tensorboard_scalars(run_dir / "tensorboard")  # rank 0's, in both environments
    assert curves["epoch/loss"] == pytest.approx({h["global_step"]: h["loss"] for h in history}, rel=1e-6)
    validated = {h["global_step"]: h["val_clustering_accuracy"] for h in history if "val_clustering_accuracy" in h}
    assert validated and curves["epoch/val_clustering_accuracy"] == pytest.approx(validated, rel=1e-6)


@pytest.mark.parametrize(
    "launcher", [pytest.param("horovod", marks=needs_horovod), pytest.param("barrier", marks=pytest.mark.portable)]
)
def test_the_clustering_phase_by_steps_with_kmeans_centroids_and_a_stop_rule(
    spark, synthetic_dataset, tmp_path, launcher
):
    """2 ranks: alpha ramped per jets seen, validation points every 2 steps and at epoch ends, centroids moved by
    mini-batch k-means (the same on both ranks), and the run ending where the stop rule says, mid-epoch."""
    from ucluster_spark.driver.launcher import train
    from ucluster_spark.executor.losses import alpha_for_jets
    from ucluster_spark.selection import validation_points

    root, info, _ = synthetic_dataset
    overrides = [
        f"data.path={root}", f"run.output={tmp_path / 'run'}", *TINY, f"run.launcher={launcher}", STACK[1],
        "train.epochs=4", "train.centroid_update=kmeans", "loss.alpha_every_jets=64", "train.validate_every_steps=2",
        "train.validate_test=true", "train.stop_rule=assignments", "train.stop_tolerance=1.0", "train.stop_patience=2",
        "train.stop_min_clustering_steps=2",
    ]  # fmt: skip
    cfg = config.load(ROOT / "conf/local.yaml", overrides)
    result = train(spark, cfg)
    first, second = result.rank_results
    assert first["weights_digest"] == second["weights_digest"] and first["centroids"] == second["centroids"]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    steps = history[0]["global_step"]  # per epoch: 168 training jets over 2 ranks in batches of 16
    jets_per_step = info.n_jets("train") / steps
    points = validation_points(history)
    # The k-means start (end of pre-training), then every 2 steps: settled (under 100 % changed) at clustering
    # steps 2 and 4, so training ends at step 4 of the clustering phase, mid-epoch.
    assert [p["clustering_step"] for p in points] == [0, 2, 4]
    assert [p["global_step"] for p in points] == [steps, steps + 2, steps + 4]
    assert len(history) == 2 and history[-1]["global_step"] == steps + 4
    assert "train.stop_rule=assignments" in history[-1]["stopped_by"]
    assert result.metrics["stopped_by"] == history[-1]["stopped_by"] and result.metrics["global_step"] == steps + 4
    for p in points[1:]:  # the alpha of each point's last step: by jets seen before it
        assert p["alpha"] == alpha_for_jets((p["clustering_step"] - 1) * jets_per_step, 50.0, 25.0, 64)
        assert 0.0 <= p["assignment_change"] <= 1.0 and p["clustering_loss_per_jet"] > 0
        assert 0.0 <= p["test_clustering_accuracy"] <= 1.0
        assert sum(p["val_cluster_sizes"]) == info.n_jets("val")
        sized = [(o, r) for o, r in zip(p["centroid_offsets"], p["cluster_radii"], strict=True) if o is not None]
        assert sized and all(o >= 0 and r >= 0 for o, r in sized)
    assert points[0]["assignment_change"] is None and points[0]["clustering_loss_per_jet"] is None
    np.testing.assert_allclose(points[-1]["centroids"], first["centroids"], atol=1e-6)  # the final model: chosen
    assert history[-1]["val_clustering_accuracy"] == points[-1]["val_clustering_accuracy"]
    assert (tmp_path / "run" / "plots" / "clustering_by_step.png").read_bytes()[:4] == b"\x89PNG"


SAME_GLOBAL_BATCH = [
    *TINY,
    "train.epochs=10",  # long enough to converge on these well separated jets: compare results,
    "train.pretrain_epochs=8",  # not noise
    "train.lr_floor=0.001",  # a constant learning rate
]


@pytest.fixture(scope="module")
def separable_jets(spark, tmp_path_factory):
    from tests.conftest import synthetic_jets
    from ucluster_spark.data.dataset import write_dataset

    root = tmp_path_factory.mktemp("separable") / "jets"
    frame = synthetic_jets(300, seed=5)
    data = config.load(None, ["data.files_per_split=4"]).data
    info = write_dataset(spark, spark.createDataFrame(frame, schema=schema.spark_schema()), root, data, {})
    return root, info


def _train_at_global_batch_32(spark, root, run_dir, workers, launcher_override):
    from ucluster_spark.driver.launcher import train

    overrides = [f"data.path={root}", f"run.output={run_dir}", *SAME_GLOBAL_BATCH, f"run.num_proc={workers}",
                 launcher_override, STACK[1], f"train.batch_size={32 // workers}"]  # fmt: skip
    return train(spark, config.load(ROOT / "conf/local.yaml", overrides))


@pytest.fixture(scope="module")
def one_worker(spark, separable_jets, tmp_path_factory):
    """The one-worker run the two-worker runs of every launcher are compared with (this environment's launcher)."""
    run_dir = tmp_path_factory.mktemp("one-worker") / "run"
    return run_dir, _train_at_global_batch_32(spark, separable_jets[0], run_dir, 1, STACK[0])


@pytest.mark.parametrize(
    "launcher", [pytest.param("horovod", marks=needs_horovod), pytest.param("barrier", marks=pytest.mark.portable)]
)
def test_one_and_two_workers_at_the_same_global_batch_reach_the_same_accuracy(
    spark, separable_jets, one_worker, tmp_path, launcher
):
    root, info = separable_jets
    two = _train_at_global_batch_32(spark, root, tmp_path / "run", 2, f"run.launcher={launcher}")
    runs = {1: one_worker, 2: (tmp_path / "run", two)}
    for workers, (run_dir, result) in runs.items():
        assert result.metrics["num_proc"] == workers and result.metrics["global_batch"] == 32
        assert result.metrics["n_jets"] == info.n_jets("test")
        # The clustering phase works on these separable jets: it lowers the clustering loss, keeps every cluster
        # populated and ends at least as accurate as its k-means start (the last pre-training epoch's record).
        history = json.loads((run_dir / "history.json").read_text())
        pretrain_epochs = config.load(run_dir / "config.yaml").train.pretrain_epochs
        kmeans_start = history[pretrain_epochs - 1]["val_clustering_accuracy"]
        clustering = history[pretrain_epochs:]
        assert clustering[-1]["clustering_loss_per_jet"] < clustering[0]["clustering_loss_per_jet"]
        assert all(min(h["train_cluster_sizes"]) > 0 and min(h["val_cluster_sizes"]) > 0 for h in clustering)
        assert clustering[-1]["val_clustering_accuracy"] >= kmeans_start
    accuracy = {workers: result.metrics["clustering_accuracy"] for workers, (_, result) in runs.items()}
    assert abs(accuracy[1] - accuracy[2]) <= 0.02, accuracy


def test_three_ranks_train_through_sparksubmit(synthetic_dataset, tmp_path):
    root, info, _ = synthetic_dataset
    run_dir = tmp_path / "three"
    result = submit(
        "--config",
        str(ROOT / "conf/local.yaml"),
        "--data",
        str(root),
        "--output",
        str(run_dir),
        "--num-proc",
        "3",
        *TINY,
        cwd=tmp_path,
        master="local[3]",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_proc"] == 3 and metrics["global_batch"] == 48
    assert metrics["n_jets"] == info.n_jets("test")  # every test jet, across three ranks
