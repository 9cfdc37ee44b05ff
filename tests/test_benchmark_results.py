"""Every accuracy and scale number in the docs comes from a committed benchmark results file."""

import importlib.util
import json

import pytest

from tests.conftest import ROOT

RESULTS = sorted((ROOT / "benchmarks/results").glob("accuracy*.json"))


def _accuracy_benchmark():
    spec = importlib.util.spec_from_file_location("accuracy_benchmark", ROOT / "benchmarks/accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_the_accuracy_tables_are_the_committed_results_files(path):
    results = json.loads(path.read_text())
    table = _accuracy_benchmark().docs_table(results)
    assert table in (ROOT / "docs/benchmarks/accuracy.md").read_text(), (
        f"regenerate it: benchmarks/accuracy.py --table {path}"
    )
    assert len(results["runs"]) == len(results["aggregate"]["seeds"])


def test_the_accuracy_results_are_committed():
    assert [p.name for p in RESULTS] == [
        "accuracy-asrun-nompi.json",
        "accuracy-asrun.json",
        "accuracy-floor1e4.json",
        "accuracy-mask-padding-false.json",
        "accuracy-packed-s7.json",
        "accuracy-packed-s89.json",
        "accuracy-references.json",
        "accuracy.json",
    ]


def test_the_scale_table_is_the_committed_results_file():
    spec = importlib.util.spec_from_file_location("scale_benchmark", ROOT / "benchmarks/scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = json.loads((ROOT / "benchmarks/results/scale.json").read_text())
    table = module.docs_table(results)
    assert table in (ROOT / "docs/benchmarks/large-datasets.md").read_text(), (
        "regenerate it: benchmarks/scale.py --table RESULTS"
    )
    assert results["summary"]["compared"]["train"][-1] >= 3_000_000
    # The committed summary is what the benchmark's own ratios make of the committed measurements.
    assert module.ratios(results["sizes"]) == results["summary"]
