"""Command-line plumbing shared by ``jobs/*.py``: arguments -> Config, and exit codes a scheduler can act on."""

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

from ucluster_spark.config import Config, ConfigError, load

EXIT_OK = 0
EXIT_BAD_INPUT = 2
"""Bad configuration, arguments or input data: rerunning will not help until the input is fixed."""
EXIT_TRAINING_FAILED = 3
"""Training or a Spark/Horovod stage failed: may be transient, safe to rerun."""
EXIT_EVALUATION_FAILED = 4
"""The cluster-assignment job failed (inputs were valid): may be transient, safe to rerun."""
EXIT_DATA_FAILED = 5
"""Generating or preparing the dataset failed (inputs were valid): may be transient, safe to rerun."""


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """A job's arguments, with stderr sent where the caller expects it first (usage errors included)."""
    use_real_stderr()
    return parser.parse_args(argv)


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


def train_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML config file (conf/*.yaml); required unless --resume")
    parser.add_argument("--data", help="prepared dataset directory (overrides data.path)")
    parser.add_argument("--output", help="run directory to write (overrides run.output)")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an unfinished run from its last checkpoint, with the run's own config (plus overrides)",
    )
    parser.add_argument("--num-proc", type=int, help="Horovod ranks (overrides run.num_proc)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    return parser


def evaluate_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True, metavar="RUN_DIR", help="finished training run directory")
    parser.add_argument("--data", help="dataset directory to assign (default: the run's own dataset)")
    parser.add_argument("--output", required=True, help="directory to write (assignments/, metrics.json, plots/)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--splits", help="comma-separated splits to assign (evaluate.splits; default all)")
    parser.add_argument("--config", help="YAML config whose evaluate section gives the defaults (optional)")
    parser.add_argument("overrides", nargs="*", metavar="evaluate.key=value", help="config overrides")
    return parser


def evaluate_config_from_args(args: argparse.Namespace) -> Config:
    flags = {"evaluate.splits": ("--splits", comma_list(args.splits))} if args.splits else {}
    return load(args.config, list(args.overrides), flags)


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def pipeline_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML config file (conf/*.yaml)")
    parser.add_argument("--run-id", required=True, help="names the run: a rerun with the same id continues it")
    parser.add_argument("--root", help="directory holding the pipeline runs (overrides pipeline.root)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    return parser


def pipeline_config_from_args(args: argparse.Namespace) -> Config:
    return load(args.config, list(args.overrides), {"pipeline.root": ("--root", args.root)} if args.root else {})


def _dataset_arguments(parser: argparse.ArgumentParser) -> None:
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


def generate_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--jets-per-class", type=int, help="jets per class (data.jets_per_class)")
    parser.add_argument("--seed", type=int, help="generation seed; task i uses Pythia seed 100000*S+i+1")
    parser.add_argument("--tasks-per-class", type=int, help="Spark tasks per class (data.tasks_per_class)")
    parser.add_argument(
        "--no-underlying-event",
        action="store_true",
        help="switch off multi-parton interactions, PartonLevel:MPI = off (data.underlying_event=false)",
    )
    _dataset_arguments(parser)
    return parser


def prepare_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--input", required=True, help="glob (or comma-separated globs) of hls4ml HDF5 files")
    parser.add_argument(
        "--drop-bad-jets",
        action="store_true",
        help="drop (and count) jets with NaN/inf values or no constituents instead of failing",
    )
    _dataset_arguments(parser)
    return parser


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
    return load(args.config, list(args.overrides), _given(flags), scope="data")


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
        from ucluster_spark.spark import get_session

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
        return EXIT_OK

    return run_main(body)


def config_from_args(args: argparse.Namespace) -> Config:
    flags = {"data.path": ("--data", args.data), "run.num_proc": ("--num-proc", args.num_proc)}
    if args.resume is not None:
        from ucluster_spark.store import RunLayout

        if args.config is not None or args.output is not None:
            raise ConfigError("--resume continues a run with its own config and directory: drop --config/--output")
        stored = RunLayout(args.resume).config
        if not stored.exists():
            raise FileNotFoundError(f"--resume {args.resume}: not a run directory (no {stored.name})")
        flags["run.output"] = ("--resume", args.resume)
        return load(stored, list(args.overrides), _given(flags))
    if args.config is None:
        raise ConfigError("--config is required (or --resume RUN_DIR)")
    flags["run.output"] = ("--output", args.output)
    return load(args.config, list(args.overrides), _given(flags))


def _given(flags: dict[str, tuple[str, object]]) -> dict[str, tuple[str, object]]:
    return {key: flag for key, flag in flags.items() if flag[1] is not None}


def exit_code_for(err: BaseException) -> int:
    """The exit code a scheduler sees for a failure (1: unexpected, a bug or an environment problem)."""
    from ucluster_spark.data.dataset import DatasetError
    from ucluster_spark.evaluate import EvaluationError
    from ucluster_spark.launcher import LaunchError
    from ucluster_spark.pipeline import DataStageError

    if isinstance(err, ConfigError | DatasetError | FileExistsError | FileNotFoundError):
        return EXIT_BAD_INPUT
    if isinstance(err, LaunchError):
        return EXIT_TRAINING_FAILED
    if isinstance(err, EvaluationError):
        return EXIT_EVALUATION_FAILED
    if isinstance(err, DataStageError):
        return EXIT_DATA_FAILED
    return 1


def run_main(body: Callable[[], int]) -> int:
    """Map failures to exit codes with one clear message (and the traceback for failures that are not bad input).
    Unexpected errors propagate (exit code 1 with their traceback)."""
    try:
        return body()
    except Exception as err:
        code = exit_code_for(err)
        if code == 1:
            raise
        if code != EXIT_BAD_INPUT:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return code
