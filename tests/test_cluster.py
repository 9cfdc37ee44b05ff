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


def test_generate_train_and_evaluate_on_two_executors(standalone_cluster, tmp_path):
    master = standalone_cluster.master_url
    data, run_dir, out = tmp_path / "jets", tmp_path / "run", tmp_path / "assigned"
    generated = submit("--jets-per-class", "40", "--tasks-per-class", "2", "--mass-window", "10,200", "--output",
                       str(data), job="generate", cwd=tmp_path, master=master)  # fmt: skip
    assert generated.returncode == 0, generated.stderr[-4000:]
    events = tmp_path / "events"
    events.mkdir()
    event_log = {"spark.eventLog.enabled": "true", "spark.eventLog.dir": str(events),
                 "spark.eventLog.compress": "false", "spark.eventLog.rolling.enabled": "false"}  # fmt: skip
    trained = submit(
        "--config", str(ROOT / "conf/local.yaml"), "--data", str(data), "--output", str(run_dir), *TINY, *STACK,
        "--num-proc", "2", f"run.spark_conf={json.dumps(event_log)}",
        cwd=tmp_path, master=master,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-6000:]
    metrics = json.loads(store.RunLayout(run_dir).metrics.read_text())
    assert metrics["num_proc"] == 2 and metrics["n_jets"] == metrics["data"]["n_test"]
    # The two ranks ran in the two executors (the launcher's stage: one task per rank).
    placements = [json.loads(store.RunLayout(run_dir).placement(r).read_text()) for r in (0, 1)]
    assert placements[0]["pid"] != placements[1]["pid"]
    per_stage = _task_executors(events, "horovod", "launchers/barrier.py")
    assert per_stage and all(ids == {"0", "1"} for ids in per_stage.values()), per_stage

    evaluated = submit("--model", str(run_dir), "--output", str(out), job="evaluate", cwd=tmp_path, master=master)
    assert evaluated.returncode == 0, evaluated.stderr[-4000:]
    scored = json.loads(store.EvaluationLayout(out).metrics.read_text())
    counts = json.loads((data / "_ucluster_dataset.json").read_text())["counts"]
    assert scored["n_jets"] == sum(n for split in counts.values() for n in split.values())  # every jet, every split


def test_a_killed_executor_fails_the_job_naming_its_rank_and_the_run_resumes(standalone_cluster, tmp_path):
    """SIGKILL of a whole executor JVM (as when a node or container dies) while its rank trains."""
    master, run_dir = standalone_cluster.master_url, tmp_path / "run"
    layout = store.RunLayout(run_dir)
    killed: dict[str, object] = {}

    def kill_an_executor_after_the_first_checkpoint():
        deadline = time.time() + 300
        while not (layout.checkpoints / "LATEST").exists() and time.time() < deadline:
            time.sleep(0.05)
        executor = standalone_cluster.executors()["1"]
        killed["pids"] = {p.pid for p in executor.children(recursive=True)}
        killed["at"] = time.time()
        executor.kill()

    killer = threading.Thread(target=kill_an_executor_after_the_first_checkpoint, daemon=True)
    killer.start()
    args = ["--config", str(ROOT / "conf/local.yaml"), "--output", str(run_dir), *TINY, *STACK, "train.epochs=40",
            f"data.generated_root={tmp_path / 'generated'}"]  # fmt: skip
    failed = submit(*args, cwd=tmp_path, master=master, timeout=600)
    killer.join(1)
    assert "at" in killed, "training ended before the executor could be killed"
    assert time.time() - killed["at"] < 180  # the job ends by itself, bounded by the launcher's and our timeouts
    assert failed.returncode == errors.EXIT_TRAINING_FAILED, failed.stderr[-4000:]
    lost = [json.loads(layout.placement(r).read_text()) for r in (0, 1)]
    lost = [p for p in lost if p["pid"] in killed["pids"]]
    assert len(lost) == 1  # the rank that ran inside the killed executor
    # "rank 0 on HOST (pid P) was lost: ..." (Horovod) or "rank 0 (executor 1 on HOST, pid P) was lost ..." (barrier)
    message = rf"rank {lost[0]['rank']} [^\n]*pid {lost[0]['pid']}\b[^\n]* was lost"
    assert re.search(message, failed.stderr), failed.stderr[-4000:]
    assert f"continue from checkpoint epoch-0001 with --resume {run_dir}" in failed.stderr
    assert not layout.metrics.exists()

    resumed = submit("--resume", str(run_dir), cwd=tmp_path, master=master)  # the master gave us a new executor
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-6000:]
    history = json.loads(layout.history.read_text())
    assert [h["epoch"] for h in history] == list(range(40))
    assert "resumed from" in layout.train_log.read_text()


def test_the_pipeline_step_on_the_cluster(standalone_cluster, tmp_path):
    root = tmp_path / "pipelines"
    result = submit("--config", str(ROOT / "conf/local.yaml"), "--run-id", "nightly", "--root", str(root), *TINY,
                    *STACK, job="pipeline", cwd=tmp_path, master=standalone_cluster.master_url)  # fmt: skip
    assert result.returncode == errors.EXIT_OK, result.stdout[-3000:] + result.stderr[-5000:]
    manifest = json.loads(store.PipelineLayout(root, "nightly").manifest.read_text())
    assert manifest["status"] == "succeeded"
    assert [manifest["stages"][s]["status"] for s in ("data", "train", "evaluate")] == ["completed"] * 3
