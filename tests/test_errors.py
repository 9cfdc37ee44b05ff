"""One owner for failures and exit codes: every error class of the package maps to the code its docs promise."""

import subprocess
import sys

import pytest

from ucluster_spark import errors

pytestmark = pytest.mark.portable  # no horovod, no petastorm: also in the current-releases environment


def test_paths_and_unexpected_errors():
    assert errors.exit_code_for(errors.OutputExists("x")) == errors.EXIT_BAD_INPUT
    assert isinstance(errors.OutputExists("x"), FileExistsError)  # callers may still catch the builtin
    assert errors.exit_code_for(errors.InputMissing("x")) == errors.EXIT_BAD_INPUT
    assert errors.exit_code_for(FileNotFoundError("a bug, not an input")) == errors.EXIT_UNEXPECTED
    assert errors.exit_code_for(KeyError("x")) == errors.EXIT_UNEXPECTED


def _modules_after_import(module: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules starting with ``prefixes`` that importing ``module`` loads, in a fresh interpreter."""
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith({prefixes!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return eval(out)  # a printed list of strings


def test_the_cli_imports_no_job_module():
    """cli.py only parses arguments and maps errors: importing it pulls in no pipeline, launcher or Spark."""
    jobs = ("ucluster_spark.driver.pipeline", "ucluster_spark.driver.launcher", "ucluster_spark.driver.evaluate")
    assert _modules_after_import("ucluster_spark.driver.cli", (*jobs, "pyspark")) == []


def test_the_driver_imports_no_tensorflow_or_horovod():
    """The driver plans, launches and collects; the model, the loop and the collectives are imported only in the
    executors' processes (the driver holds ``rank.train_fn``, a thin wrapper that imports the loop when it runs)."""
    driver = ", ".join(
        f"ucluster_spark.{name}"
        for name in ("driver.launcher", "driver.evaluate", "driver.pipeline", "driver.tracking", "jobs.train")
    )
    heavy = ("tensorflow", "horovod", "keras", "ucluster_spark.executor.rank.loop", "ucluster_spark.executor.model")
    assert _modules_after_import(driver, heavy) == []
