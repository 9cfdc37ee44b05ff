"""The jobs on a real Spark standalone cluster (a master and two one-core workers on 127.0.0.1): every task runs
in an executor process of its own, so two ranks run on two executors and one of them can be killed. With the
launcher and reader of the environment (``STACK``): Horovod and petastorm, or the barrier stage and pyarrow."""

import json
import re
import threading
import time

import pytest

from tests.conftest import ROOT, STACK, TINY, submit
from ucluster_spark import errors, store

pytestmark = [pytest.mark.slow, pytest.mark.portable]


def _task_executors(event_log_dir, *names: str) -> dict[str, set[str]]:
    """Executor ids that ran each stage's tasks, from the application's Spark event log."""
    stage_names, executors = {}, {}
    for path in event_log_dir.iterdir():
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event["Event"] == "SparkListenerStageSubmitted":
                info = event["Stage Info"]
                stage_names[info["Stage ID"]] = info["Stage Name"]
            elif event["Event"] == "SparkListenerTaskEnd" and event["Task End Reason"]["Reason"] == "Success":
                executors.setdefault(event["Stage ID"], set()).add(event["Task Info"]["Executor ID"])
    return {stage_names[s]: ids for s, ids in executors.items() if any(n in stage_names[s] for n in names)}


EPOCHS = 5
"""The killed run's epochs: the kill comes right after the first checkpoint, with epochs still to train."""
RUN_ID = "nightly"
MODEL = "cluster-run"


@pytest.fixture(scope="module")
def killed_then_resumed(standalone_cluster, tracking_server, tmp_path_factory):
    """The scheduled step (``jobs/pipeline.py``) on the cluster: Pythia jets generated in its tasks, then one executor
    JVM SIGKILLed right after the training stage's first checkpoint (as when a node or container dies) while its
    rank trains; then the same pipeline run ID again on the executors the master gives it, with a Spark event log: it
    keeps the jets, resumes the training, evaluates, and logs and registers the model in MLflow. The pipeline's
    stages are the generate, train and evaluate jobs' own code (``data/``, ``driver/``), so this one run checks the
    three jobs on the cluster, the failure and its resumption, and where the ranks ran."""
    work = tmp_path_factory.mktemp("killed-executor")
    master, root, events = standalone_cluster.master_url, work / "pipelines", work / "events"
    layout = store.PipelineLayout(root, RUN_ID)
    run_dir = layout.train.root
    killed: dict[str, object] = {}

    def kill_an_executor_after_the_first_checkpoint():
        deadline = time.time() + 300
        while not (layout.train.checkpoints / "LATEST").exists() and time.time() < deadline:
            time.sleep(0.05)
        executor = standalone_cluster.executors()["1"]
        killed["pids"] = {p.pid for p in executor.children(recursive=True)}
        killed["at"] = time.time()
        executor.kill()

    killer = threading.Thread(target=kill_an_executor_after_the_first_checkpoint, daemon=True)
    killer.start()
    args = ["--config", str(ROOT / "conf/local.yaml"), "--run-id", RUN_ID, "--root", str(root), *TINY, *STACK,
            "data.tasks_per_class=2", "run.num_proc=2", f"train.epochs={EPOCHS}",
            f"tracking.register_as={MODEL}"]  # fmt: skip
    tracked = {"MLFLOW_TRACKING_URI": tracking_server, "MLFLOW_EXPERIMENT_NAME": "cluster"}
    failed = submit(*args, job="pipeline", cwd=work, master=master, timeout=600, extra_env=tracked)
    ended = time.time()
    killer.join(1)
    placements = [json.loads(layout.train.placement(r).read_text()) for r in (0, 1)]  # the killed run's
    metrics_after_failure = layout.train.metrics.exists()
    manifest_after_failure = json.loads(layout.manifest.read_text())
    events.mkdir()
    event_log = {"spark.eventLog.enabled": "true", "spark.eventLog.dir": str(events),
                 "spark.eventLog.compress": "false", "spark.eventLog.rolling.enabled": "false"}  # fmt: skip
    resumed = submit(*args, f"run.spark_conf={json.dumps(event_log)}", job="pipeline", cwd=work, master=master,
                     extra_env=tracked)  # fmt: skip
    return {"layout": layout, "run_dir": run_dir, "killed": killed, "failed": failed, "ended": ended,
            "placements": placements, "metrics_after_failure": metrics_after_failure,
            "manifest_after_failure": manifest_after_failure, "resumed": resumed, "events": events}  # fmt: skip


def test_a_killed_executor_fails_the_job_naming_its_rank_and_the_run_resumes(killed_then_resumed):
    run = killed_then_resumed
    killed, failed, run_dir = run["killed"], run["failed"], run["run_dir"]
    layout = store.RunLayout(run_dir)
    assert "at" in killed, "training ended before the executor could be killed"
    assert run["ended"] - killed["at"] < 180  # the job ends by itself, bounded by the launcher's and our timeouts
    assert failed.returncode == errors.EXIT_TRAINING_FAILED, failed.stderr[-4000:]
    lost = [p for p in run["placements"] if p["pid"] in killed["pids"]]
    assert len(lost) == 1  # the rank that ran inside the killed executor
    # "rank 0 on HOST (pid P) was lost: ..." (Horovod) or "rank 0 (executor 1 on HOST, pid P) was lost ..." (barrier)
    message = rf"rank {lost[0]['rank']} [^\n]*pid {lost[0]['pid']}\b[^\n]* was lost"
    assert re.search(message, failed.stderr), failed.stderr[-4000:]
    after_failure = run["manifest_after_failure"]
    stages = after_failure["stages"]
    assert (stages["data"]["status"], stages["data"]["action"]) == ("completed", "generated with Pythia")
    assert stages["train"]["status"] == "failed" and re.search(message, stages["train"]["error"])
    assert "continue from checkpoint epoch-0001" in stages["train"]["error"]
    assert stages["evaluate"]["status"] == "pending" and after_failure["exit_code"] == errors.EXIT_TRAINING_FAILED
    assert not run["metrics_after_failure"] and (run_dir / "checkpoints/LATEST").exists()

    resumed = run["resumed"]  # the master gave us a new executor
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-6000:]
    history = json.loads(layout.history.read_text())
    assert [h["epoch"] for h in history] == list(range(EPOCHS))
    assert "resumed from" in layout.train_log.read_text()
    manifest = json.loads(run["layout"].manifest.read_text())
    assert manifest["status"] == "succeeded" and manifest["attempt"] == 2 and manifest["exit_code"] == 0
    assert [a["exit_code"] for a in manifest["earlier_attempts"]] == [errors.EXIT_TRAINING_FAILED]
    stages = manifest["stages"]
    assert (stages["data"]["status"], stages["data"]["action"]) == ("skipped", "generated with Pythia")
    assert (stages["train"]["status"], stages["train"]["resumed"]) == ("completed", True)
    assert stages["evaluate"]["status"] == "completed"


def test_generate_train_and_evaluate_on_two_executors(
    standalone_cluster, killed_then_resumed, tracking_server, tmp_path
):
    """The generated jets, the resumed training and the evaluation, all on the cluster; then the evaluate job with the
    model the pipeline registered in MLflow, which the driver downloads and ships to the executors."""
    run_dir, out = killed_then_resumed["run_dir"], tmp_path / "assigned"
    assert killed_then_resumed["resumed"].returncode == 0, killed_then_resumed["resumed"].stderr[-6000:]
    metrics = json.loads(store.RunLayout(run_dir).metrics.read_text())
    assert metrics["num_proc"] == 2 and metrics["n_jets"] == metrics["data"]["n_test"]
    # The two ranks ran in the two executors (the launcher's stage: one task per rank), and so did the evaluation.
    placements = [json.loads(store.RunLayout(run_dir).placement(r).read_text()) for r in (0, 1)]
    assert placements[0]["pid"] != placements[1]["pid"]
    per_stage = _task_executors(killed_then_resumed["events"], "horovod", "launchers/barrier.py")
    assert per_stage and all(ids == {"0", "1"} for ids in per_stage.values()), per_stage
    counts = json.loads((killed_then_resumed["layout"].data / "_ucluster_dataset.json").read_text())["counts"]
    assert all(counts["train"][c] > 0 for c in ("w", "z", "t"))
    every_jet = sum(n for split in counts.values() for n in split.values())
    pipeline_scored = json.loads(killed_then_resumed["layout"].evaluate.metrics.read_text())
    assert pipeline_scored["n_jets"] == every_jet and pipeline_scored["throughput"]["executor_processes"] == 2

    import mlflow

    registered = f"models:/{MODEL}/1"  # by the pipeline's rerun, from tracking.register_as
    logged_by = json.loads(killed_then_resumed["layout"].manifest.read_text())["mlflow_run_id"]
    assert mlflow.tracking.MlflowClient(tracking_server).get_model_version(MODEL, "1").run_id == logged_by
    evaluated = submit("--model", registered, "--output", str(out), job="evaluate", cwd=tmp_path,
                       master=standalone_cluster.master_url,
                       extra_env={"MLFLOW_TRACKING_URI": tracking_server})  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-4000:]
    scored = json.loads(store.EvaluationLayout(out).metrics.read_text())
    assert scored["n_jets"] == every_jet and scored["model"] == registered
    assert scored["throughput"]["executor_processes"] == 2
    for key in ("clustering_accuracy", "nmi", "cluster_sizes", "confusion_matrix"):
        assert scored[key] == pipeline_scored[key], key  # the registered model is the run folder's
