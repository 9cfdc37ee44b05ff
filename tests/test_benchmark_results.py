"""Every accuracy number in the README comes from a committed benchmark results file."""

import importlib.util
import json

import pytest

from tests.conftest import ROOT

RESULTS = ROOT / "benchmarks/results/accuracy.json"


def _accuracy_benchmark():
    spec = importlib.util.spec_from_file_location("accuracy_benchmark", ROOT / "benchmarks/accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not RESULTS.exists(), reason="no accuracy results committed yet")
def test_the_readme_accuracy_table_is_the_committed_results_file():
    results = json.loads(RESULTS.read_text())
    table = _accuracy_benchmark().readme_table(results)
    assert table in (ROOT / "README.md").read_text(), "regenerate it: benchmarks/accuracy.py --readme-table " + str(
        RESULTS.relative_to(ROOT)
    )
    assert len(results["runs"]) == len(results["aggregate"]["seeds"])
