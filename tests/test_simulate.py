import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ucluster_spark import errors, schema
from ucluster_spark.data import simulate
from ucluster_spark.data.dataset import load_info
from ucluster_spark.data.simulate import generate_jets, plan_tasks
from ucluster_spark.errors import InputFileError

pytestmark = pytest.mark.slow


def test_tasks_split_the_jets_and_get_distinct_seeds():
    tasks = plan_tasks(["w", "z", "t"], jets_per_class=10, tasks_per_class=3, base_seed=2)
    assert [t.n_jets for t in tasks] == [4, 3, 3] * 3
    assert len({t.seed for t in tasks}) == 9
    assert plan_tasks(["w", "z", "t"], 10, 3, 2) == tasks
    with pytest.raises(errors.ConfigError, match="data.classes: cannot generate class 'x' with Pythia"):
        plan_tasks(["x"], 10, 1, 1)
    with pytest.raises(errors.ConfigError, match=r"'hbb' with Pythia \(it makes \['g', 'q', 'w', 'z', 't'\]\)"):
        plan_tasks(["w", "hbb"], 10, 1, 1)  # a JetClass class: prepared from files, not generated


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


def test_mass_window_keeps_generating_until_enough_jets_pass():
    task = plan_tasks(["w"], jets_per_class=20, tasks_per_class=1, base_seed=5)[0]
    rejected = Counter()
    jets = pd.concat(generate_jets(task, 100, "ucluster8", mass_window=(70.0, 100.0), rejected=rejected))
    assert len(jets) == 20 and jets[schema.JET_ID].is_unique
    assert ((jets[schema.MASS] > 70) & (jets[schema.MASS] < 100)).all()
    # Same Pythia stream without the cut: the windowed jets are its jets inside the window, in order, and the
    # rejected count is the number outside it before the 20th one inside.
    longer = plan_tasks(["w"], jets_per_class=60, tasks_per_class=1, base_seed=5)[0]
    assert longer.seed == task.seed
    every = pd.concat(generate_jets(longer, 100, "ucluster8"))
    inside = ((every[schema.MASS] > 70) & (every[schema.MASS] < 100)).to_numpy()
    assert inside.sum() >= 20
    np.testing.assert_array_equal(jets[schema.PT].to_numpy(), every[schema.PT].to_numpy()[inside][:20])
    last = np.flatnonzero(inside)[19]
    assert rejected == {"outside_mass_window": int((~inside[: last + 1]).sum())} and rejected["outside_mass_window"] > 0


def test_a_mass_window_that_keeps_nothing_stops_with_a_message(monkeypatch):
    monkeypatch.setattr(simulate, "MAX_REJECTED_BEFORE_FIRST", 5)
    task = plan_tasks(["w"], jets_per_class=3, tasks_per_class=1, base_seed=5)[0]
    with pytest.raises(InputFileError, match=r"data.mass_window \[1.0, 2.0\]: none of the first \d+ w jets"):
        list(generate_jets(task, 100, "ucluster8", mass_window=(1.0, 2.0)))


def test_without_underlying_event_jets_have_fewer_particles():
    assert "PartonLevel:MPI = off" in simulate.settings("w", 7, underlying_event=False)
    assert not any("MPI" in line for line in simulate.settings("w", 7))
    task = plan_tasks(["w"], jets_per_class=20, tasks_per_class=1, base_seed=5)[0]
    with_ue = pd.concat(generate_jets(task, 100, "ucluster8"))
    without = pd.concat(generate_jets(task, 100, "ucluster8", underlying_event=False))
    again = pd.concat(generate_jets(task, 100, "ucluster8", underlying_event=False))
    assert len(without) == 20
    np.testing.assert_array_equal(np.stack(without[schema.CONSTITUENTS]), np.stack(again[schema.CONSTITUENTS]))
    # Multi-parton interactions add soft particles to every jet (measured: 51 vs 40 per W jet here).
    assert without[schema.N_CONSTITUENTS].mean() < 0.9 * with_ue[schema.N_CONSTITUENTS].mean()


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
    assert again.returncode == errors.EXIT_BAD_INPUT and "pass --overwrite" in again.stderr


def test_generate_job_mass_window_and_no_underlying_event_are_recorded(tmp_path):
    extra = ("--mass-window", "60,180", "--no-underlying-event")
    result = subprocess.run(_generate_cmd(tmp_path / "ds", 8, *extra), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    info = load_info(tmp_path / "ds")
    assert {c: sum(info.counts[s][c] for s in schema.SPLITS) for c in info.classes} == {"w": 8, "t": 8}
    assert info.source["mass_window"] == [60.0, 180.0] and info.source["underlying_event"] is False
    assert info.source["dropped"]["outside_mass_window"] > 0  # many top jets are heavier than 180 GeV
    assert "dropped: {'outside_mass_window'" in result.stdout
    mass = pd.concat(pd.read_parquet(tmp_path / "ds" / s) for s in schema.SPLITS)[schema.MASS]
    assert len(mass) == 16 and mass.between(60, 180, inclusive="neither").all()


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--mass-window", "200,10"],
            "--mass-window: data.mass_window must be [LO, HI] with LO < HI (GeV), or [] for no cut; got [200.0, 10.0]",
        ),
        (["--mass-window", "10"], "--mass-window: data.mass_window must be [LO, HI] with LO < HI (GeV)"),
        (["--mass-window", "10,x"], "--mass-window '10,x': expected LO,HI in GeV, e.g. 10,200"),
        (["data.mass_window=[10]"], r"data.mass_window must be [LO, HI] with LO < HI"),
        (["data.underlying_event=maybe"], "data.underlying_event: expected bool, got 'maybe'"),
    ],
)
def test_generate_job_refuses_bad_window_and_flags(tmp_path, capsys, flags, message):
    from ucluster_spark.jobs import generate

    code = generate.main(["--classes", "w", "--jets-per-class", "2", "--output", str(tmp_path / "ds"), *flags])
    assert code == errors.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_a_killed_generate_job_leaves_no_dataset(tmp_path):
    output = tmp_path / "ds"
    proc = subprocess.Popen(
        _generate_cmd(output, 5000), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        for line in proc.stdout:  # wait until Pythia runs inside the Spark tasks
            if "[simulate] w seed=" in line and "jets/s" in line:
                break
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not output.exists()
