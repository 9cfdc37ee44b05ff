"""The Databricks notebooks run as plain Python on tiny data: prepare -> train -> evaluate."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.slow


def _run(notebook, cwd, **params):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    env.update({f"UCLUSTER_{k.upper()}": str(v) for k, v in params.items()})
    return subprocess.run([sys.executable, str(ROOT / "notebooks" / notebook)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip


def test_notebooks_are_databricks_source_files():
    for path in sorted((ROOT / "notebooks").glob("*.py")):
        text = path.read_text()
        assert text.startswith("# Databricks notebook source\n"), path
        assert "# COMMAND ----------" in text and "dbutils" in text, path


def test_the_three_notebooks_run_locally(tmp_path):
    data, run_dir, out = tmp_path / "data", tmp_path / "run", tmp_path / "evaluation"
    prepared = _run("01_prepare_data.py", tmp_path, jets_per_class=40, output=data)
    assert prepared.returncode == 0, prepared.stderr[-4000:]
    assert "train " in prepared.stdout and (data / "_ucluster_dataset.json").exists()

    overrides = " ".join(t for t in TINY if not t.startswith("data."))
    trained = _run("02_train.py", tmp_path, config=ROOT / "conf/local.yaml", data=data, run_dir=run_dir,
                   overrides=overrides)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-4000:]
    assert (run_dir / "metrics.json").exists() and "training_curves.png" in trained.stdout

    evaluated = _run("03_evaluate.py", tmp_path, model=run_dir, output=out, splits="test")
    assert evaluated.returncode == 0, evaluated.stderr[-4000:]
    result = json.loads((out / "metrics.json").read_text())
    trained_metrics = json.loads((run_dir / "metrics.json").read_text())
    assert result["splits"] == ["test"]
    assert result["clustering_accuracy"] == pytest.approx(trained_metrics["clustering_accuracy"])


class _Widgets:
    """What the notebooks use of Databricks' ``dbutils``: text widgets holding their defaults."""

    def __init__(self):
        self.values = {}

    def text(self, name, default):
        self.values.setdefault(name, default)

    def get(self, name):
        return self.values[name]


def test_on_databricks_the_notebooks_write_to_a_unity_catalog_volume():
    from types import SimpleNamespace

    from ucluster_spark import store
    from ucluster_spark.driver import notebook

    dbutils = SimpleNamespace(widgets=_Widgets())
    root = notebook.work_root(dbutils)
    assert root.startswith("/Volumes/") and len(root.split("/")) == 5  # /Volumes/<catalog>/<schema>/<volume>
    params = notebook.parameters({"output": f"{root}/datasets/wzt"}, dbutils)
    assert params == {"output": "/Volumes/main/default/ucluster/datasets/wzt"}
    assert str(store.local_path(params["output"])) == params["output"]  # a FUSE path: read and written as it is
    assert notebook.work_root(None) == "notebook-work"
