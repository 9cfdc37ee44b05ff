import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ucluster_spark import cli, schema
from ucluster_spark.data.dataset import load_info
from ucluster_spark.data.simulate import generate_jets, plan_tasks

pytestmark = pytest.mark.slow


def test_tasks_split_the_jets_and_get_distinct_seeds():
    tasks = plan_tasks(["w", "z", "t"], jets_per_class=10, tasks_per_class=3, base_seed=2)
    assert [t.n_jets for t in tasks] == [4, 3, 3] * 3
    assert len({t.seed for t in tasks}) == 9
    assert plan_tasks(["w", "z", "t"], 10, 3, 2) == tasks
    with pytest.raises(ValueError, match="cannot generate class 'x'"):
        plan_tasks(["x"], 10, 1, 1)


@pytest.mark.parametrize("name, sd_window", [("w", (50, 110)), ("t", (120, 230))])
def test_pythia_jets_have_the_schema_and_plausible_physics(name, sd_window):
    task = plan_tasks([name], jets_per_class=12, tasks_per_class=1, base_seed=5)[0]
    frames = list(generate_jets(task, max_constituents=100, feature_set="ucluster8"))
    jets = __import__("pandas").concat(frames)
    assert len(jets) == 12 and jets[schema.JET_ID].is_unique
    assert set(jets[schema.LABEL_NAME]) == {name}
    assert jets[schema.PT].between(800, 1200).all() and (jets[schema.ETA].abs() < 2).all()
    assert sd_window[0] < jets[schema.SD_MASS].median() < sd_window[1]
    for n, flat in zip(jets[schema.N_CONSTITUENTS], jets[schema.CONSTITUENTS], strict=True):
        x = flat.reshape(100, 8)
        real = min(n, 100)
        assert np.all(np.any(x[:real] != 0, axis=1)) and np.all(x[real:] == 0)
        assert np.all(np.diff(x[:real, 6]) <= 1e-6)  # log pt decreasing


def test_same_seed_same_jets():
    task = plan_tasks(["z"], jets_per_class=3, tasks_per_class=1, base_seed=9)[0]
    first = __import__("pandas").concat(generate_jets(task, 100, "ucluster8"))
    second = __import__("pandas").concat(generate_jets(task, 100, "ucluster8"))
    np.testing.assert_array_equal(np.stack(first[schema.CONSTITUENTS]), np.stack(second[schema.CONSTITUENTS]))


def _generate_cmd(output, jets_per_class, *extra):
    root = Path(__file__).resolve().parents[1]
    return [
        sys.executable,
        str(root / "jobs/generate.py"),
        "--classes",
        "w,t",
        "--jets-per-class",
        str(jets_per_class),
        "--seed",
        "3",
        "--tasks-per-class",
        "1",
        "--files-per-split",
        "2",
        "--output",
        str(output),
        *extra,
    ]


def test_generate_job_writes_and_reports_counts(tmp_path):
    result = subprocess.run(_generate_cmd(tmp_path / "ds", 8), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    info = load_info(tmp_path / "ds")
    assert info.classes == ["w", "t"] and sum(info.n_jets(s) for s in schema.SPLITS) == 16
    assert "jets: train" in result.stdout
    again = subprocess.run(_generate_cmd(tmp_path / "ds", 8), capture_output=True, text=True, timeout=600)
    assert again.returncode == cli.EXIT_BAD_INPUT and "pass --overwrite" in again.stderr


def test_a_killed_generate_job_leaves_no_dataset(tmp_path):
    output = tmp_path / "ds"
    proc = subprocess.Popen(
        _generate_cmd(output, 5000), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        for line in proc.stdout:  # wait until Pythia runs inside the Spark tasks
            if "[generate w" in line and "jets/s" in line:
                break
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not output.exists()
