"""One owner for failures and exit codes: every error class of the package maps to the code its docs promise."""

import importlib
import subprocess
import sys

import pytest

from ucluster_spark import errors


@pytest.mark.parametrize(
    "module, name, code",
    [
        ("ucluster_spark.config", "ConfigError", errors.EXIT_BAD_INPUT),
        ("ucluster_spark.data.dataset", "DatasetError", errors.EXIT_BAD_INPUT),
        ("ucluster_spark.data.ingest", "InputFileError", errors.EXIT_BAD_INPUT),
        ("ucluster_spark.launcher", "LaunchError", errors.EXIT_TRAINING_FAILED),
        ("ucluster_spark.checkpoint", "CheckpointDamaged", errors.EXIT_TRAINING_FAILED),
        ("ucluster_spark.evaluate", "EvaluationError", errors.EXIT_EVALUATION_FAILED),
        ("ucluster_spark.pipeline", "DataStageError", errors.EXIT_DATA_FAILED),
        ("ucluster_spark.pipeline", "PipelineBusy", errors.EXIT_BUSY),  # another attempt runs: retry later
    ],
)
def test_each_error_carries_its_exit_code(module, name, code):
    error_class = getattr(importlib.import_module(module), name)
    assert errors.exit_code_for(error_class("x")) == code


def test_paths_and_unexpected_errors():
    assert errors.exit_code_for(errors.OutputExists("x")) == errors.EXIT_BAD_INPUT
    assert isinstance(errors.OutputExists("x"), FileExistsError)  # callers may still catch the builtin
    assert errors.exit_code_for(errors.InputMissing("x")) == errors.EXIT_BAD_INPUT
    assert errors.exit_code_for(FileNotFoundError("a bug, not an input")) == errors.EXIT_UNEXPECTED
    assert errors.exit_code_for(KeyError("x")) == errors.EXIT_UNEXPECTED


def test_the_cli_imports_no_job_module():
    """cli.py only parses arguments and maps errors: importing it pulls in no pipeline, launcher or Spark."""
    code = (
        "import sys, ucluster_spark.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('ucluster_spark.pipeline', 'ucluster_spark.launcher', "
        "'ucluster_spark.evaluate', 'pyspark'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
