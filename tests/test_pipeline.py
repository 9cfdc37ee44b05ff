"""The scheduled pipeline step for real: spark-submit jobs/pipeline.py, run again (nothing changes) and with another
configuration (refused); failed and resumed: tests/test_cluster.py."""

import json
import os

import pytest

from tests.conftest import ROOT, TINY, submit
from tests.sample_files.hls4ml import jet_values, write_file
from ucluster_spark import config, errors, store
from ucluster_spark.driver.pipeline import check_same_config, exclusive, run_pipeline

pytestmark = pytest.mark.slow
CONFIG = str(ROOT / "conf/local.yaml")


def _pipeline(tmp_path, run_id, *overrides, extra_env=None):
    return submit("--config", CONFIG, "--run-id", run_id, "--root", str(tmp_path / "pipelines"), *TINY, *overrides,
                  job="pipeline", cwd=tmp_path, extra_env=extra_env)  # fmt: skip


def _files(directory):
    """Every file under ``directory`` with its identity and modification time."""
    found = {}
    for dirpath, _, names in os.walk(directory):
        for name in names:
            stat = os.stat(os.path.join(dirpath, name))
            found[os.path.relpath(os.path.join(dirpath, name), directory)] = (stat.st_ino, stat.st_mtime_ns)
    return found


def test_the_pipeline_generates_its_data_with_pythia_and_refuses_a_missing_dataset(spark, tmp_path):
    """The data stage's own generation (the full pipeline on prepared files is the test below), then a data.path
    that is no dataset: exit 2, the data stage failed, nothing after it started."""
    from ucluster_spark.data.dataset import load_info
    from ucluster_spark.driver.pipeline import Manifest, data_stage

    cfg = config.load(CONFIG, [*TINY, f"pipeline.root={tmp_path / 'pipelines'}"])
    layout = store.PipelineLayout(cfg.pipeline.root, "generated")
    layout.root.mkdir(parents=True)
    manifest = Manifest(layout.manifest, "generated")
    root = data_stage(spark, cfg, layout, manifest)
    stage = json.loads(layout.manifest.read_text())["stages"]["data"]
    assert (stage["status"], stage["action"]) == ("completed", "generated with Pythia")
    assert stage["outputs"] == [{"kind": "dataset", "path": str(root), "status": "complete"}]
    info = load_info(root)
    assert info.source["generator"] == "pythia8" and set(info.counts["train"]) == set(cfg.data.classes)
    assert all(n > 0 for n in info.counts["train"].values())

    missing = _pipeline(tmp_path, "bad-input", f"data.path={tmp_path / 'nowhere'}")
    assert missing.returncode == errors.EXIT_BAD_INPUT
    assert "is not a complete ucluster dataset" in missing.stdout + missing.stderr
    failed = json.loads((tmp_path / "pipelines/bad-input/manifest.json").read_text())
    assert failed["stages"]["data"]["status"] == "failed" and failed["exit_code"] == errors.EXIT_BAD_INPUT
    assert failed["stages"]["train"]["status"] == "pending"


def test_the_pipeline_prepares_files_and_a_rerun_changes_nothing(tmp_path):
    """A training failure and the rerun that resumes it: the standalone-cluster test (an executor killed under the
    training stage), in both environments."""
    write_file(tmp_path / "jets_a.h5", jet_values(300, seed=3))
    hls4ml = [f"pipeline.input={tmp_path / '*.h5'}", "data.mass_window=[1,250]"]
    done = _pipeline(tmp_path, "from-h5", *hls4ml)
    assert done.returncode == errors.EXIT_OK, done.stderr[-5000:]
    run_dir = tmp_path / "pipelines/from-h5"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["exit_code"] == 0 and manifest["attempt"] == 1
    stages = manifest["stages"]
    assert (stages["data"]["status"], stages["data"]["action"]) == ("completed", "prepared from hls4ml files")
    assert stages["train"]["status"] == "completed" and stages["train"]["resumed"] is False
    assert stages["evaluate"]["status"] == "completed"
    history = json.loads((run_dir / "train/history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    listed = [o for s in stages.values() for o in s["outputs"]]
    assert {o["kind"] for o in listed} >= {"dataset", "model", "metrics", "plots", "assignments"}
    assert all(o["status"] == "complete" for o in listed)
    evaluation = json.loads((run_dir / "evaluate/metrics.json").read_text())
    trained = json.loads((run_dir / "train/metrics.json").read_text())
    assert evaluation["by_split"]["test"]["clustering_accuracy"] == pytest.approx(trained["clustering_accuracy"])
    assert manifest["warnings"] == [f"train: {w}" for w in trained["warnings"]] + [
        f"evaluate: {w}" for w in evaluation["warnings"]
    ]  # a degenerate run succeeds, and the manifest says so
    assert "evaluate: completed" in done.stdout
    before = _files(run_dir)

    again = _pipeline(tmp_path, "from-h5", *hls4ml)
    assert again.returncode == errors.EXIT_OK, again.stderr[-5000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [manifest["stages"][s]["status"] for s in ("data", "train", "evaluate")] == ["skipped"] * 3
    assert manifest["attempt"] == 2 and manifest["earlier_attempts"][-1]["status"] == "succeeded"
    after = _files(run_dir)
    assert {k: v for k, v in after.items() if k != "manifest.json"} == {
        k: v for k, v in before.items() if k != "manifest.json"
    }  # nothing rewritten, nothing added

    changed = _pipeline(tmp_path, "from-h5", *hls4ml, "train.epochs=3")
    assert changed.returncode == errors.EXIT_BAD_INPUT
    assert "started with another configuration (changed: train.epochs)" in changed.stdout + changed.stderr
    assert json.loads((run_dir / "manifest.json").read_text()) == manifest


def test_one_attempt_per_run_id_at_a_time(spark, tmp_path):
    cfg = config.load(CONFIG, [f"pipeline.root={tmp_path}"])
    with (
        exclusive(store.PipelineLayout(tmp_path, "busy")),
        pytest.raises(store.OutputBusy, match=r"busy: another job is writing this pipeline run \(pid \d+ on "),
    ):
        run_pipeline(spark, cfg, "busy")
    with pytest.raises(config.ConfigError, match="--run-id"):
        run_pipeline(spark, cfg, "../escape")


def test_a_rerun_may_change_only_settings_that_do_not_change_the_result(tmp_path):
    stored = config.load(CONFIG).to_dict()
    check_same_config(stored, config.load(CONFIG, ["run.verbose=2", "pipeline.root=elsewhere"]), tmp_path)
    with pytest.raises(config.ConfigError, match=r"changed: model.n_clusters, train.seed"):
        check_same_config(stored, config.load(CONFIG, ["train.seed=1", "model.n_clusters=4"]), tmp_path)
    with pytest.raises(config.ConfigError, match=r"changed: data.mass_window\)"):
        check_same_config(stored, config.load(CONFIG, ["data.mass_window=[20,180]"]), tmp_path)
