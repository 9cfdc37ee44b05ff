"""Command-line plumbing shared by the jobs (``ucluster_spark/jobs/``): arguments -> Config, stderr under
spark-submit, failures -> one line and the exit code a scheduler acts on (``errors.py``)."""

from __future__ import annotations

import argparse
import io
import os
import re
import stat
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ucluster_spark import errors, logs
from ucluster_spark.config import Config, ConfigError, Flags, load


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """A job's arguments, with stderr sent where the caller expects it first (usage errors included)."""
    use_real_stderr()
    logs.configure()
    return parser.parse_intermixed_args(argv)  # overrides may stand between the flags


def use_real_stderr() -> None:
    """spark-submit runs the driver's Python with its stderr merged into stdout (Spark's PythonRunner), so a
    scheduler reading stdout would take errors for output. Send this process's stderr to spark-submit's own stderr:
    by file descriptor (Linux /proc of the parent JVM) when that is a terminal, a pipe or a file opened for
    appending, so native libraries' messages follow too; otherwise (a file opened without append, where writing
    beside the JVM's own offset would overwrite its lines) Python's ``sys.stderr`` through the JVM itself."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return  # not started by spark-submit: stderr is already the caller's
    parent = Path(f"/proc/{os.getppid()}")
    try:
        jvm_err, jvm_out, ours = os.stat(parent / "fd/2"), os.stat(parent / "fd/1"), os.fstat(2)
        flags = re.search(r"flags:\s*([0-7]+)", (parent / "fdinfo/2").read_text())
    except OSError:
        return  # no /proc (not Linux): leave it merged
    if flags is None or any((jvm_err.st_dev, jvm_err.st_ino) == (f.st_dev, f.st_ino) for f in (jvm_out, ours)):
        return  # merged by the caller anyway (2>&1, one terminal), or already ours
    if not stat.S_ISREG(jvm_err.st_mode) or int(flags.group(1), 8) & os.O_APPEND:
        fd = os.open(parent / "fd/2", os.O_WRONLY | os.O_APPEND)
        sys.stderr.flush()
        os.dup2(fd, 2)
        os.close(fd)
        return
    from pyspark.java_gateway import launch_gateway  # connects to spark-submit's gateway

    sys.stderr.flush()
    sys.stderr = _JvmStderr(launch_gateway().jvm.System.err)


class _JvmStderr(io.TextIOBase):
    """``sys.stderr`` written by the JVM's ``System.err`` (its own file offset)."""

    def __init__(self, stream: Any):
        self._stream = stream

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._stream.print(text)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


def load_config(path: str | Path | None, overrides: list[str] | None, flags: Flags) -> Config:
    """``config.load`` with the flags that were given (None: not given), then the log level of ``run.verbose``."""
    cfg = load(path, overrides, _given(flags))
    logs.set_verbosity(cfg.run.verbose)
    return cfg


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="dataset directory to write (must not exist)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --output")
    parser.add_argument("--config", help="YAML config whose data section gives the defaults (optional)")
    parser.add_argument("--classes", help="comma-separated classes among g,q,w,z,t (data.classes)")
    parser.add_argument("--max-constituents", type=int, help="particle slots per jet (data.max_constituents)")
    parser.add_argument("--files-per-split", type=int, help="parquet files per split (data.files_per_split)")
    parser.add_argument(
        "--mass-window",
        help="LO,HI: keep jets with LO < mass < HI GeV, the plain jet mass (data.mass_window; the paper: 10,200)",
    )
    parser.add_argument("overrides", nargs="*", metavar="data.key=value", help="config overrides")


def data_config_from_args(args: argparse.Namespace) -> Config:
    """The data section from --config (optional), the dataset flags and data.key=value overrides. Only the data
    settings are checked: a data job does not use the model's."""
    window = parse_mass_window(args.mass_window)
    flags = {
        "data.classes": ("--classes", comma_list(args.classes) if args.classes else None),
        "data.mass_window": ("--mass-window", list(window) if window else None),
        "data.underlying_event": ("--no-underlying-event", False if getattr(args, "no_underlying_event", 0) else None),
        "data.max_constituents": ("--max-constituents", args.max_constituents),
        "data.files_per_split": ("--files-per-split", args.files_per_split),
        "data.jets_per_class": ("--jets-per-class", getattr(args, "jets_per_class", None)),
        "data.generation_seed": ("--seed", getattr(args, "seed", None)),
        "data.tasks_per_class": ("--tasks-per-class", getattr(args, "tasks_per_class", None)),
    }
    cfg = load(args.config, list(args.overrides), _given(flags), scope="data")
    logs.set_verbosity(cfg.run.verbose)
    return cfg


def parse_mass_window(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--mass-window {text!r}: expected LO,HI in GeV, e.g. 10,200") from None
    if not low < high:
        raise ConfigError(f"--mass-window {text!r}: LO must be below HI")
    return low, high


def run_dataset_job(app_name: str, args: argparse.Namespace, build: Callable[[Any, Config], Any]) -> int:
    """Config from the dataset flags, a SparkSession, ``build(spark, cfg) -> DatasetInfo``, a summary on stdout."""

    def body() -> int:
        from ucluster_spark.data.dataset import format_counts
        from ucluster_spark.driver.session import get_session

        cfg = data_config_from_args(args)
        spark = get_session(app_name, cfg.run.spark_conf)
        try:
            info = build(spark, cfg)
        finally:
            spark.stop()
        print(f"dataset: {args.output}")
        print(f"jets: {format_counts(info)}")
        if "dropped" in info.source:
            print(f"dropped: {info.source['dropped']}")
        return errors.EXIT_OK

    return run_main(body)


def _given(flags: Flags) -> Flags:
    return {key: flag for key, flag in flags.items() if flag[1] is not None}


def run_main(body: Callable[[], int]) -> int:
    """Map failures to exit codes with one clear message (and the traceback for failures that are not bad input).
    Unexpected errors propagate (exit code 1 with their traceback)."""
    try:
        return body()
    except Exception as err:
        code = errors.exit_code_for(err)
        if code == errors.EXIT_UNEXPECTED:
            raise
        if code != errors.EXIT_BAD_INPUT:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return code
