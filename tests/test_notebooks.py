"""The Databricks notebooks run as plain Python on tiny data: prepare -> train -> evaluate."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.slow


ATTACHED = """
import json, os, runpy, sys
for notebook, params in json.loads(sys.argv[1]):
    print(f"=== {notebook}", flush=True)
    os.environ.update(params)
    runpy.run_path(notebook, run_name="__main__")
    for key in params:
        del os.environ[key]
"""
"""The notebooks one after the other in one Python process, as notebooks attached to one Databricks cluster share its
SparkSession: each gets its parameters as ``UCLUSTER_<NAME>`` variables (``driver/notebook.py``)."""


def _run_attached(cwd, *notebooks: tuple[str, dict]) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """The process and each notebook's stdout."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    plan = [(str(ROOT / "notebooks" / name), {f"UCLUSTER_{k.upper()}": str(v) for k, v in params.items()})
            for name, params in notebooks]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", ATTACHED, json.dumps(plan)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    parts = done.stdout.split("=== ")[1:]
    return done, {part.split("\n", 1)[0].rsplit("/", 1)[-1]: part.split("\n", 1)[1] for part in parts}


def test_notebooks_are_databricks_source_files():
    for path in sorted((ROOT / "notebooks").glob("*.py")):
        text = path.read_text()
        assert text.startswith("# Databricks notebook source\n"), path
        assert "# COMMAND ----------" in text and "dbutils" in text, path


def test_the_three_notebooks_run_locally(tmp_path):
    data, run_dir, out = tmp_path / "data", tmp_path / "run", tmp_path / "evaluation"
    overrides = " ".join(t for t in TINY if not t.startswith("data."))
    done, printed = _run_attached(
        tmp_path,
        ("01_prepare_data.py", {"jets_per_class": 40, "output": data}),
        ("02_train.py", {"config": ROOT / "conf/local.yaml", "data": data, "run_dir": run_dir, "overrides": overrides}),
        ("03_evaluate.py", {"model": run_dir, "output": out, "splits": "test"}),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert list(printed) == ["01_prepare_data.py", "02_train.py", "03_evaluate.py"]
    assert "train " in printed["01_prepare_data.py"] and (data / "_ucluster_dataset.json").exists()
    assert (run_dir / "metrics.json").exists() and "training_curves.png" in printed["02_train.py"]
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
