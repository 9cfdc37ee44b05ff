"""What the jobs read out of other programs' error text (Horovod, Spark, TensorFlow), on messages in the form those
programs write them, and the staging a killed pipeline attempt leaves behind. Fast: no Spark, no ranks."""

import json

import pytest

from ucluster_spark import errors, store
from ucluster_spark.driver.failures import failure_hint, lost_ranks
from ucluster_spark.driver.launchers.barrier import reason
from ucluster_spark.driver.pipeline import exclusive
from ucluster_spark.executor.rank.environment import report_failure

pytestmark = pytest.mark.portable  # no horovod, no petastorm: also in the current-releases environment

# horovod 0.28.1, runner/gloo_run.py (verbatim), as horovod.spark.run raises it for a rank that exited.
HOROVOD_RANK_EXITED = (
    "Horovod detected that one or more processes exited with non-zero status, thus causing the job to be terminated. "
    "The first process to do so was:\nProcess name: {rank}\nExit code: {code}\n"
)

# Spark 3.5: a barrier task whose Python function raised (TaskSetManager's error message: the Python traceback, then
# the JVM stack), and a task lost with its executor.
SPARK_PYTHON_TASK_FAILED = """org.apache.spark.api.python.PythonException: Traceback (most recent call last):
  File "/opt/spark/python/lib/pyspark.zip/pyspark/worker.py", line 1247, in main
    process()
  File "/work/ucluster_spark/executor/rank/barrier.py", line 98, in run_rank_task
    raise RuntimeError(f"rank {rank} failed (exit code {code})")
RuntimeError: rank 1 failed (exit code 28): the rank ran out of disk space

\tat org.apache.spark.api.python.BasePythonRunner$ReaderIterator.handlePythonException(PythonRunner.scala:572)
\tat org.apache.spark.api.python.PythonRunner$$anon$3.read(PythonRunner.scala:784)
\tat org.apache.spark.executor.Executor$TaskRunner.run(Executor.scala:620)
"""
SPARK_EXECUTOR_LOST = (
    "ExecutorLostFailure (executor 1 exited caused by one of the running tasks) Reason: Remote RPC client "
    "disassociated. Likely due to containers exceeding thresholds, or network issues. Check driver logs for WARN "
    "messages.\n"
)

# TensorFlow 2.18's form in graph mode (the training step), when a peer died inside a Horovod allreduce.
TF_GRAPH_EXECUTION_ERROR = (
    "Graph execution error:\n\n"
    "Detected at node DistributedGradientTape_Allreduce/cond_1/then/_0/HorovodAllreduce_grads_1_0 defined at (most "
    "recent call last):\n"
    '  File "/work/ucluster_spark/executor/rank/loop.py", line 160, in run_epoch\n\n'
    "[../third_party/gloo/gloo/transport/tcp/pair.cc:598] Connection closed by peer [127.0.0.1]:13011\n"
    "\t [[{{node DistributedGradientTape_Allreduce/cond_1/then/_0/HorovodAllreduce_grads_1_0}}]] "
    "[Op:__inference_step_8521]"
)


def test_a_rank_that_exited_is_named_with_what_its_exit_code_means_and_how_to_continue(tmp_path):
    err = errors.TrainingFailed(f"training failed: {HOROVOD_RANK_EXITED.format(rank=1, code=137)}")
    assert failure_hint(err, tmp_path) == (
        "exit code 137: the rank was killed (SIGKILL: out of memory, a lost or preempted executor); "
        "no checkpoint was written yet"
    )
    err = errors.TrainingFailed(f"training failed: {HOROVOD_RANK_EXITED.format(rank=0, code=28)}")
    assert failure_hint(err, tmp_path).startswith("exit code 28: the rank ran out of disk space; ")


def test_a_rank_lost_with_its_executor_is_named_by_where_it_ran(tmp_path):
    layout = store.RunLayout(tmp_path)
    layout.placement("1").parent.mkdir(parents=True)
    layout.placement("1").write_text(json.dumps({"host": "worker-7", "pid": 4242}))
    lost = HOROVOD_RANK_EXITED.format(rank=1, code=None)
    assert lost_ranks(lost, layout) == ["rank 1 on worker-7 (pid 4242)"]
    assert lost_ranks(HOROVOD_RANK_EXITED.format(rank=0, code=None), layout) == [
        "rank 0 (it never reported where it ran)"
    ]
    assert lost_ranks(HOROVOD_RANK_EXITED.format(rank=1, code=1), layout) == []  # it exited: not lost
    hint = failure_hint(errors.TrainingFailed(lost), tmp_path)
    assert hint.startswith("rank 1 on worker-7 (pid 4242) was lost: its process ended without an exit code")


def test_the_reason_of_a_failed_barrier_task_is_the_python_error_or_sparks_own_line():
    assert (
        reason(SPARK_PYTHON_TASK_FAILED) == "RuntimeError: rank 1 failed (exit code 28): the rank ran out of disk space"
    )
    assert reason(SPARK_EXECUTOR_LOST).startswith("ExecutorLostFailure (executor 1 exited caused by one of the running")


class UnknownError(Exception):
    """Stands for tensorflow.errors.UnknownError: the report names the error's class."""


def test_a_ranks_report_names_the_cause_tensorflow_puts_between_its_traceback_and_the_node(tmp_path, monkeypatch):
    monkeypatch.setenv("HOROVOD_RANK", "1")
    report_failure(str(tmp_path), UnknownError(TF_GRAPH_EXECUTION_ERROR))
    report = json.loads(store.RunLayout(tmp_path).failure_report("1").read_text())
    assert report["error"] == (
        "UnknownError: [../third_party/gloo/gloo/transport/tcp/pair.cc:598] Connection closed by peer [127.0.0.1]:13011"
    )
    assert report["kind"] == "UnknownError" and report["rank"] == "1" and "[[{{node" in report["details"]


def test_a_pipeline_attempt_removes_what_a_killed_one_was_staging(tmp_path):
    layout = store.PipelineLayout(tmp_path, "nightly-1")
    layout.root.mkdir(parents=True)
    layout.config.write_text("data: {}\n")  # an attempt of this run id started before
    left = [layout.root / ".data.tmp-1a2b3c4d", layout.root / "train" / "checkpoints" / ".epoch-0003.tmp-5e6f7a8b"]
    for staging in left:
        staging.mkdir(parents=True)
        (staging / "part-00000.parquet").write_bytes(b"\0" * 1024)
    kept = layout.root / "train" / "checkpoints" / "epoch-0002"
    kept.mkdir()
    with exclusive(layout):
        assert not any(path.exists() for path in left)
    assert kept.exists() and layout.config.exists()
