"""Cluster assignment as a Spark job: real executors running the trained model through mapInPandas."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT, submit, synthetic_jets
from ucluster_spark import config, errors, schema, store
from ucluster_spark.data.dataset import DatasetError, write_dataset
from ucluster_spark.driver.evaluate import evaluate, mass_histograms, read_trained_run, score, tallies
from ucluster_spark.jobs import evaluate as evaluate_job
from ucluster_spark.selection import validation_points

pytestmark = pytest.mark.slow
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def evaluation(spark, finished_run, tmp_path_factory):
    """The run's own dataset, every split, read in many small partitions (so tasks outnumber worker processes)."""
    _, run_dir, _ = finished_run
    out = tmp_path_factory.mktemp("evaluate") / "out"
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(64 * 1024))
    try:
        result = evaluate(spark, run_dir, None, out, config.EvaluateConfig(batch_size=7))
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    return run_dir, out, result


def _direct_clusters(run_dir, url):
    """In the test process, no Spark: the saved model over one ordered pass of a split."""
    from ucluster_spark.executor.inference import load_run
    from ucluster_spark.executor.losses import squared_distances
    from ucluster_spark.executor.reader import evaluation_batches

    cfg, model = load_run(run_dir)
    ids, clusters, labels = [], [], []
    with evaluation_batches(
        url, shard=0, shard_count=1, max_constituents=100, n_features=8, batch_size=50,
        columns=[schema.JET_ID, schema.LABEL],
    ) as batches:  # fmt: skip
        for batch in batches:
            z = model.backbone(batch[schema.CONSTITUENTS], training=False)["z"]
            clusters.append(np.argmin(squared_distances(z, model.centroids).numpy(), axis=1))
            labels.append(batch[schema.LABEL].numpy())
            ids += [v.decode() for v in batch[schema.JET_ID].numpy()]
    return ids, np.concatenate(clusters), np.concatenate(labels)


def test_every_jet_is_assigned_once_and_scored_like_a_direct_computation(spark, evaluation):
    from ucluster_spark.metrics import contingency, summarize

    run_dir, out, result = evaluation
    run_metrics = json.loads((run_dir / "metrics.json").read_text())
    data_root = store.local_path(run_metrics["data"]["train_url"]).parent
    assignments = pd.read_parquet(out / "assignments")
    assert list(assignments.columns) == list(schema.ASSIGNMENT_COLUMNS)
    assert assignments[schema.JET_ID].is_unique
    assert result["n_jets"] == len(assignments) == sum(json.loads((data_root / schema.METADATA_FILE).read_text())[
        "counts"][s][c] for s in schema.SPLITS for c in ("w", "z", "t"))  # fmt: skip

    counts = np.zeros((3, 3), np.int64)
    for split in schema.SPLITS:
        ids, clusters, labels = _direct_clusters(run_dir, store.file_url(data_root / split))
        mine = assignments[assignments[schema.SPLIT] == split].set_index(schema.JET_ID).loc[ids]
        np.testing.assert_array_equal(mine[schema.CLUSTER].to_numpy(), clusters)
        np.testing.assert_array_equal(mine[schema.LABEL].to_numpy(), labels)
        part = contingency(clusters, labels, 3, 3)
        assert result["by_split"][split]["confusion_matrix"] == part.tolist()
        counts += part
    direct = summarize(counts, ["w", "z", "t"])
    for key in ("clustering_accuracy", "nmi", "ari"):
        assert result[key] == pytest.approx(direct[key]), key
    for key in ("confusion_matrix", "cluster_to_class", "n_jets", "cluster_sizes"):
        assert result[key] == direct[key], key
    # The training job's own test metric, computed by the ranks, is the same number.
    assert result["by_split"]["test"]["clustering_accuracy"] == pytest.approx(run_metrics["clustering_accuracy"])
    assert json.loads((out / "metrics.json").read_text())["clustering_accuracy"] == result["clustering_accuracy"]


def test_assignment_columns_are_consistent(evaluation):
    _, out, result = evaluation
    a = pd.read_parquet(out / "assignments")
    z, d, q = (np.stack(a[c].to_numpy()) for c in (schema.EMBEDDING, schema.DISTANCES, schema.SOFT_ASSIGNMENT))
    assert z.shape[1] == d.shape[1] == q.shape[1] == 3
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.argmin(d, axis=1), a[schema.CLUSTER])
    np.testing.assert_array_equal(np.argmax(q, axis=1), a[schema.CLUSTER])
    assert result["soft_assignment_alpha"] == config.load(ROOT / "conf/local.yaml").loss.alpha_start  # last epoch's


def test_one_read_of_the_assignments_gives_the_counts_and_the_mass_histograms(spark, evaluation):
    from ucluster_spark import plots

    _, out, result = evaluation
    a = pd.read_parquet(out / "assignments")
    rows = tallies(spark.read.parquet(str(out / "assignments")))
    assert sum(row[-1] for row in rows) == len(a) == result["n_jets"]
    expected = plots.mass_histogram(a[schema.CLUSTER].to_numpy(), a[schema.MASS].to_numpy(), 3)
    np.testing.assert_array_equal(mass_histograms(rows, 3), expected)
    assert score([(s, c, label, n) for s, c, label, _, n in rows], list(schema.SPLITS), 3, ["w", "z", "t"])[
        "confusion_matrix"] == result["confusion_matrix"]  # fmt: skip


def test_the_model_is_loaded_once_per_executor_process(spark, evaluation):
    _, _, result = evaluation
    t = result["throughput"]
    assert t["tasks"] > t["executor_processes"] >= 1
    assert t["model_loads"] == t["executor_processes"]
    assert t["jets_per_second"] > 0 and t["cores"] == spark.sparkContext.defaultParallelism


def test_evaluation_draws_its_plots_and_leaves_nothing_else(evaluation):
    _, out, result = evaluation
    assert sorted(result["plots"]) == ["confusion_matrix.png", "embedding.png", "mass_per_cluster.png"]
    for name in result["plots"]:
        assert (out / "plots" / name).read_bytes()[:8] == PNG
    assert sorted(p.name for p in out.iterdir()) == ["assignments", "metrics.json", "plots"]
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]


def test_unlabelled_jets_get_cluster_sizes_only(spark, finished_run, tmp_path):
    _, run_dir, _ = finished_run
    frame = synthetic_jets(30, seed=5)
    frame[schema.LABEL] = None
    frame[schema.LABEL_NAME] = None
    root = tmp_path / "unlabelled"
    df = spark.createDataFrame(frame, schema=schema.spark_schema())
    write_dataset(spark, df, root, config.load(None, ["data.files_per_split=2"]).data, {"generator": "test"})
    result = evaluate(spark, run_dir, root, tmp_path / "out", config.EvaluateConfig(splits=["test", "val"]))
    assert result["labelled"] is False and "clustering_accuracy" not in result
    assert result["n_jets"] == sum(result["cluster_sizes"]) == result["unlabelled_jets"]
    assert set(result["by_split"]) == {"test", "val"}
    assert result["plots"] == ["embedding.png", "mass_per_cluster.png"]
    assert pd.read_parquet(tmp_path / "out/assignments")[schema.LABEL].isna().all()


def test_a_dataset_with_other_inputs_is_refused_before_any_output(spark, finished_run, tmp_path):
    _, run_dir, _ = finished_run
    root = tmp_path / "fifty"
    frame = synthetic_jets(10, max_constituents=50)
    df = spark.createDataFrame(frame, schema=schema.spark_schema())
    write_dataset(spark, df, root, config.load(None, ["data.max_constituents=50"]).data, {"generator": "test"})
    with pytest.raises(DatasetError, match=r"50 constituents per jet, but the model .* with 100"):
        evaluate(spark, run_dir, root, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    job = submit("--model", str(run_dir), "--data", str(root), "--output", str(tmp_path / "out"),
                 job="evaluate", cwd=tmp_path)  # fmt: skip
    assert job.returncode == errors.EXIT_BAD_INPUT, job.stderr[-3000:]
    assert "50 constituents per jet" in job.stdout + job.stderr  # spark-submit may merge the driver's stderr
    assert not (tmp_path / "out").exists()


def test_a_dataset_with_its_features_in_another_order_is_refused(spark, finished_run, synthetic_dataset, tmp_path):
    _, run_dir, _ = finished_run
    root = tmp_path / "reordered"
    shutil.copytree(synthetic_dataset[0], root)
    meta = json.loads((root / schema.METADATA_FILE).read_text())
    meta["feature_names"] = meta["feature_names"][::-1]  # e.g. written by another version of the feature code
    (root / schema.METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"dataset has feature set 'ucluster8' \['costhetarel'"):
        evaluate(spark, run_dir, root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_malformed_jet_fails_the_job_naming_it_and_writes_nothing(spark, finished_run, tmp_path):
    _, run_dir, _ = finished_run
    frame = synthetic_jets(10, seed=2)
    frame.at[3, schema.CONSTITUENTS] = frame.at[3, schema.CONSTITUENTS][:-8]  # one particle short
    root = tmp_path / "malformed"
    df = spark.createDataFrame(frame, schema=schema.spark_schema())
    write_dataset(spark, df, root, config.load(None, ["data.files_per_split=2"]).data, {"generator": "test"})
    wrong = frame.at[3, schema.JET_ID]
    with pytest.raises(DatasetError, match=rf"jet '{wrong}': column 'constituents' holds 792 values, the model"):
        evaluate(spark, run_dir, root, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_an_unfinished_run_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a finished training run"):
        read_trained_run(tmp_path)


def test_score_without_and_with_labels():
    rows = [("test", 0, 0, 5), ("test", 1, 1, 4), ("test", 1, 0, 1), ("val", 0, 0, 2)]
    labelled = score(rows, ["test", "val"], 2, ["w", "z"])
    assert labelled["confusion_matrix"] == [[7, 0], [1, 4]] and labelled["n_jets"] == 12
    assert labelled["by_split"]["val"]["n_jets"] == 2
    unlabelled = score([*rows, ("val", 1, None, 3)], ["test", "val"], 2, ["w", "z"])
    assert unlabelled["cluster_sizes"] == [7, 8] and unlabelled["unlabelled_jets"] == 3


def test_evaluate_settings_come_from_flags_and_overrides():
    parser = evaluate_job.parser()
    args = parser.parse_args(["--model", "r", "--output", "o", "--splits", "test,val", "evaluate.batch_size=64"])
    cfg = evaluate_job.config_from_args(args)
    assert cfg.evaluate.splits == ["test", "val"] and cfg.evaluate.batch_size == 64
    with pytest.raises(config.ConfigError, match="evaluate.splits"):
        evaluate_job.config_from_args(parser.parse_args(["--model", "r", "--output", "o", "--splits", "tset"]))


def test_runs_are_logged_to_mlflow_when_it_is_configured(finished_run, evaluation, tracking_server, monkeypatch):
    mlflow = pytest.importorskip("mlflow")  # installed with the test extras; optional for users
    from ucluster_spark.config import TrackingConfig
    from ucluster_spark.driver import tracking

    _, run_dir, _ = finished_run
    _, out, result = evaluation
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.log_training(run_dir) is None  # no tracking server configured: nothing happens

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "jobs")
    client = mlflow.tracking.MlflowClient()
    no_model = TrackingConfig(log_model=False)  # the model: tests/test_mlflow_model.py
    trained = client.get_run(tracking.log_training(run_dir, no_model))
    assert trained.data.params["train.epochs"] == "2" and trained.data.params["data.classes"] == '["w", "z", "t"]'
    assert [m.step for m in client.get_metric_history(trained.info.run_id, "focal_loss")] == [1, 2]
    points = validation_points(json.loads((run_dir / "history.json").read_text()))
    by_step = client.get_metric_history(trained.info.run_id, "by_step_val_clustering_accuracy")
    assert [(m.step, m.value) for m in by_step] == [(p["global_step"], p["val_clustering_accuracy"]) for p in points]
    assert len(points) == 2 and "by_step_largest_centroid_offset" in trained.data.metrics  # k-means start, epoch 2
    run_metrics = json.loads((run_dir / "metrics.json").read_text())
    assert trained.data.metrics["test_clustering_accuracy"] == pytest.approx(run_metrics["clustering_accuracy"])
    assert "plots/train/training_curves.png" in {a.path for a in client.list_artifacts(trained.info.run_id,
                                                                                       "plots/train")}  # fmt: skip
    evaluated = client.get_run(tracking.log_evaluation(out))
    assert evaluated.data.metrics["eval_clustering_accuracy"] == pytest.approx(result["clustering_accuracy"])

    pipeline_run = client.get_run(tracking.log_pipeline("nightly-7", None, run_dir, out, no_model))
    assert not mlflow.search_logged_models(filter_string=f"source_run_id = '{pipeline_run.info.run_id}'",
                                           output_format="list")  # fmt: skip
    assert pipeline_run.data.tags["ucluster.pipeline_run_id"] == "nightly-7"
    assert {"test_clustering_accuracy", "eval_clustering_accuracy", "loss"} <= set(pipeline_run.data.metrics)
    assert tracking.log_pipeline("nightly-7", pipeline_run.info.run_id, run_dir, out) == pipeline_run.info.run_id
    assert len(client.search_runs([pipeline_run.info.experiment_id])) == 3  # a rerun logs nothing again

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens: logging fails, quietly
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    assert tracking.log_training(run_dir) is None
