"""The console format every process uses, and run.verbose."""

import logging

import pytest

from ucluster_spark import logs

pytestmark = pytest.mark.portable  # no horovod, no petastorm: also in the current-releases environment


def test_records_and_rank_lines_share_one_format(capsys):
    logs.configure(1)
    logging.getLogger("ucluster_spark.driver.launcher").info("2 Horovod rank(s)")
    logging.getLogger("ucluster_spark.driver.launcher").warning("rank 1 failed")
    logging.getLogger("ucluster_spark.driver.pipeline").debug("not shown at verbose 1")
    lines = capsys.readouterr().err.splitlines()
    assert [line[20:] for line in lines] == ["[launcher] 2 Horovod rank(s)", "[launcher] WARNING: rank 1 failed"]
    assert logs.line("ucluster_spark.train", "epoch 1/2")[20:] == "[train] epoch 1/2"


def test_verbosity_follows_run_verbose(capsys):
    logs.configure(0)
    logging.getLogger("ucluster_spark.driver.evaluate").info("hidden")
    logging.getLogger("ucluster_spark.driver.evaluate").warning("shown")
    logs.configure(2)
    logging.getLogger("ucluster_spark.driver.evaluate").debug("details")
    logs.configure(1)
    assert [line[20:] for line in capsys.readouterr().err.splitlines()] == [
        "[evaluate] WARNING: shown",
        "[evaluate] DEBUG: details",
    ]
    handlers = logging.getLogger("ucluster_spark").handlers
    assert sum(isinstance(h, logs.StderrHandler) for h in handlers) == 1  # configuring again adds none


def test_an_epoch_and_a_validation_point_are_one_short_line_each():
    """The console shows what a person watches; the whole record (rank memory, timings, spreads) is in
    history.json."""
    record = {"epoch": 13, "loss": 0.65112, "focal_loss": 0.59201, "clustering_loss_per_jet": 0.0036941,
              "alpha": 275.0, "beta": 10.0, "learning_rate": 1e-5, "bn_momentum": 0.99, "global_step": 84,
              "started_at": 1.796e9, "seconds": 15.98, "cpu_seconds": 14.82, "jets_per_second": 10.45,
              "peak_rss_mb": [819.6, 818.4], "train_cluster_sizes": [60123, 56456, 51789],
              "val_clustering_accuracy": 0.71234, "val_nmi": 0.4567, "val_cluster_sizes": [10112, 9345, 11017],
              "val_embedding_std": [0.034457, 0.059625, 0.076546], "val_warnings": [],
              "kmeans_start_test_accuracy": 0.5412, "kmeans_start_test_nmi": 0.3101}  # fmt: skip
    line = logs.line("ucluster_spark.train", logs.epoch_line(record, 200))
    assert len(line) <= 160, line
    assert line.endswith(
        "[train] epoch 14/200 loss 0.6511 focal 0.592 clust 0.00369 α 275 lr 1e-05 10 jets/s | val acc 0.712 "
        "nmi 0.457 sizes 10112/9345/11017"
    )
    pretraining = {k: record[k] for k in ("epoch", "loss", "focal_loss", "clustering_loss_per_jet", "alpha",
                                          "learning_rate", "jets_per_second")}  # fmt: skip
    assert logs.epoch_line(pretraining, 200).endswith("lr 1e-05 10 jets/s")

    point = {"global_step": 1234, "clustering_step": 600, "alpha": 75.0, "val_clustering_accuracy": 0.70412,
             "assignment_change": 0.01234, "centroid_offsets": [0.0497141, 0.029129, 0.022753]}  # fmt: skip
    line = logs.validation_point_line(point)
    assert line == "step 1234 (clustering 600) α 75 val acc 0.704 changed 0.012 centroid offsets 0.0497/0.0291/0.0228"
    assert "changed" not in logs.validation_point_line({**point, "assignment_change": None})  # the first point
    emptied = logs.validation_point_line({**point, "centroid_offsets": [0.05, None, 0.02]})
    assert emptied.endswith("centroid offsets 0.05/empty/0.02")


def test_the_session_drops_sparks_task_clean_up_trace_at_shutdown_only(spark):
    """Spark's own log4j2, filtered by the session: the message a task thread logs when it ends after SparkEnv
    stopped (spark-submit stopped under a job) is dropped; any other error of the same logger is printed."""
    jvm = spark.sparkContext._jvm
    config = jvm.org.apache.logging.log4j.LogManager.getContext(False).getConfiguration()
    installed = config.getLoggerConfig("org.apache.spark.util.Utils").getFilter()

    def verdict(text: str) -> str:
        message = jvm.org.apache.logging.log4j.message.SimpleMessage(text)
        event = jvm.org.apache.logging.log4j.core.impl.Log4jLogEvent.newBuilder().setMessage(message).build()
        return str(installed.filter(event).toString())

    assert verdict("Uncaught exception in thread Executor task launch worker for task 0.0 (TID 7)") == "DENY"
    assert verdict("Uncaught exception in thread dispatcher-event-loop-1") == "NEUTRAL"
    assert verdict("Exception in task 0.0 in stage 3.0 (TID 7)") == "NEUTRAL"
