"""The main job for real: spark-submit, Pythia inside Spark tasks, petastorm, 2 Horovod ranks over Gloo."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ucluster_spark import cli, config, store

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SPARK_SUBMIT = Path(sys.executable).with_name("spark-submit")
TINY = [
    "data.jets_per_class=40",
    "data.tasks_per_class=1",
    "train.epochs=2",
    "train.pretrain_epochs=1",
    "train.batch_size=16",
    "model.mlp1=[16,32]",
    "model.gap2_features=32",
    "model.mlp2=[32,32]",
    "train.lr_halve_every_samples=64",
]


def _submit(*args, cwd):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    return subprocess.run(
        [str(SPARK_SUBMIT), "--master", "local[2]", str(ROOT / "jobs/train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    run_dir = work / "run"
    result = _submit(
        "--config",
        str(ROOT / "conf/local.yaml"),
        "--output",
        str(run_dir),
        f"data.generated_root={work / 'generated'}",
        *TINY,
        cwd=work,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return work, run_dir, result


def test_train_job_writes_a_complete_run_directory(finished_run):
    work, run_dir, result = finished_run
    assert f"run directory: {run_dir}" in result.stdout
    assert "clustering accuracy (test," in result.stdout
    output = result.stdout + result.stderr  # spark-submit merges the driver's (and ranks') stderr into stdout
    assert "[train] epoch 2/2" in output  # per-epoch progress from rank 0
    assert "[generate w" in output  # Pythia progress from the Spark tasks
    assert "[train] epoch 2/2" in (run_dir / "train.log").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 < metrics["clustering_accuracy"] <= 1.0
    assert metrics["n_jets"] == metrics["data"]["n_test"] == sum(metrics["cluster_sizes"])
    assert metrics["num_proc"] == 2
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    # The schedule defects of the earlier port cannot recur: alpha ramps and the learning rate decays as the
    # optimizer's own step counter advances (32 jets per global step, halved every 64 jets here).
    assert [h["alpha"] for h in history] == [0.0, 5.0] and [h["beta"] for h in history] == [0.0, 10.0]
    for h in history:
        assert h["learning_rate"] == pytest.approx(1e-3 * 0.5 ** (h["global_step"] * 32 // 64))
    assert history[1]["global_step"] > history[0]["global_step"] > 0
    assert history[1]["learning_rate"] < history[0]["learning_rate"]
    assert not [p for p in run_dir.parent.iterdir() if ".tmp-" in p.name]


def test_saved_model_reloads_and_reproduces_the_test_assignment(finished_run):
    from ucluster_spark.metrics import contingency, summarize
    from ucluster_spark.model import build_model
    from ucluster_spark.reader import evaluation_batches

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
        with_labels=True,
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
    result = _submit(
        "--config",
        str(ROOT / "conf/local.yaml"),
        "--output",
        str(run_dir),
        f"data.generated_root={work / 'refused'}",
        *TINY,
        cwd=work,
    )
    assert result.returncode == cli.EXIT_BAD_INPUT
    assert f"{run_dir} already holds a finished run" in result.stdout  # spark-submit merges python's stderr
    assert not (work / "refused").exists()
    assert (run_dir / "metrics.json").read_bytes() == before


def test_a_second_run_reuses_the_generated_sample(finished_run, tmp_path):
    from ucluster_spark.data.dataset import generation_key
    from ucluster_spark.data.sources import locate_or_generate
    from ucluster_spark.spark import get_session

    work, _, _ = finished_run
    cfg = config.load(ROOT / "conf/local.yaml", [f"data.generated_root={work / 'generated'}", *TINY])
    root = work / "generated" / generation_key(cfg.data)
    stamp = (root / "_ucluster_dataset.json").stat().st_mtime_ns
    found, info = locate_or_generate(get_session("reuse-check"), cfg.data)
    assert found == root and info.n_jets("train") > 0
    assert (root / "_ucluster_dataset.json").stat().st_mtime_ns == stamp


def test_bad_config_exits_with_the_bad_input_code(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "jobs"))
    try:
        import train as train_job
    finally:
        sys.path.pop(0)
    assert train_job.main(["--config", str(ROOT / "conf/local.yaml"), "train.epochs=zero"]) == cli.EXIT_BAD_INPUT
    assert "train.epochs: expected int, got 'zero'" in capsys.readouterr().err


def test_ranks_end_with_identical_weights_and_centroids(spark, synthetic_dataset, tmp_path):
    """In-process driver, 2 real Horovod ranks: broadcast, averaged gradients and rank-0 k-means agree."""
    from ucluster_spark.launcher import train

    root, info, _ = synthetic_dataset
    cfg = config.load(ROOT / "conf/local.yaml", [f"data.path={root}", f"run.output={tmp_path / 'run'}", *TINY])
    result = train(spark, cfg)
    first, second = result.rank_results
    assert (first["rank"], second["rank"]) == (0, 1)
    assert first["weights_checksum"] == second["weights_checksum"]
    assert first["centroids"] == second["centroids"]
    assert first["metrics"] == second["metrics"]  # whole-split metrics from summed per-rank counts
    assert result.metrics["n_jets"] == info.n_jets("test")  # every test jet, across both ranks
