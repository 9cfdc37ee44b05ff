"""Command-line plumbing shared by the jobs (``ucluster_spark/jobs/``): arguments -> Config, stderr under
spark-submit, failures -> one line and the exit code a scheduler acts on (``errors.py``)."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import signal
import stat
import sys
import threading
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from ucluster_spark import errors, logs, store
from ucluster_spark.config import Config, ConfigError, Flags, load


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """A job's arguments, with stderr sent where the caller expects it first (usage errors included)."""
    use_real_stderr()
    logs.configure()
    return parser.parse_intermixed_args(argv)  # overrides may stand between the flags


def use_real_stderr() -> None:
    """spark-submit runs the driver's Python with its stderr merged into stdout (Spark's PythonRunner), so a
    scheduler reading stdout would take errors for output. Send this process's stderr to spark-submit's own stderr:
    by file descriptor (Linux /proc of the parent JVM: psutil does not tell a pipe's or a terminal's identity or an
    open file's append flag) when that is a terminal, a pipe or a file opened for
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
    sys.stderr = _JvmStderr(launch_gateway().jvm.System.err, os.open(parent / "fd/2", os.O_WRONLY | os.O_APPEND))


class _JvmStderr(io.TextIOBase):
    """``sys.stderr`` written by the JVM's ``System.err`` (its own file offset); once the JVM has exited (the job
    was stopped), appended to the same file directly, so the job's last line still reaches it."""

    def __init__(self, stream: Any, after_jvm_fd: int):
        self._stream = stream
        self._after_jvm_fd = after_jvm_fd
        self._jvm_gone = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not self._jvm_gone:
            try:
                self._stream.print(text)
                return len(text)
            except Exception:  # py4j: the JVM is gone
                self._jvm_gone = True
        os.write(self._after_jvm_fd, text.encode())
        return len(text)

    def flush(self) -> None:
        if not self._jvm_gone:
            with contextlib.suppress(Exception):
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
    flags = {
        "data.classes": ("--classes", comma_list(args.classes) if args.classes else None),
        "data.mass_window": ("--mass-window", numbers(args.mass_window, "--mass-window", "LO,HI in GeV, e.g. 10,200")),
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


def numbers(text: str | None, flag: str, expected: str) -> list[float] | None:
    """A flag's comma-separated numbers (None when not given); what they must satisfy is the config's rule."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected {expected}") from None


def run_dataset_job(app_name: str, args: argparse.Namespace, build: Callable[[Any, Config], Any]) -> int:
    """Config from the dataset flags, a SparkSession, ``build(spark, cfg) -> DatasetInfo``, a summary on stdout."""

    def body() -> int:
        from ucluster_spark.data.dataset import format_counts
        from ucluster_spark.driver.session import get_session

        cfg = data_config_from_args(args)
        store.check_output_location(args.output, "--output")  # before Spark starts
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

    return run_main(body, lambda: f"nothing was written to {args.output}: run the same command again")


def _given(flags: Flags) -> Flags:
    return {key: flag for key, flag in flags.items() if flag[1] is not None}


def run_main(body: Callable[[], int], interrupted: Callable[[], str] = lambda: "") -> int:
    """Map failures to exit codes with one clear message (after the traceback, for failures where it helps).
    An interrupt (Ctrl-C, SIGTERM to this process, or spark-submit's JVM stopping under the job) is one line too:
    ``interrupted()`` says what stopped and how to continue. Unexpected errors propagate (exit code 1 with their
    traceback)."""
    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.getsignal(signal.SIGTERM), threading.excepthook
    if main_thread:
        signal.signal(signal.SIGTERM, _raise_terminated)
    threading.excepthook = partial(_quiet_launcher_threads, previous[1])
    ended_cleanly = False
    try:
        code = body()
        ended_cleanly = True
        return code
    except (KeyboardInterrupt, errors.Terminated, Exception) as err:
        interrupt = errors.interrupt_exit_code(err)
        if interrupt is not None:
            how = {KeyboardInterrupt: "Ctrl-C", errors.Terminated: "SIGTERM"}.get(errors.interrupt_kind(err)) or (
                "Spark was shut down under the job: spark-submit stopped by a signal, or its JVM failed"
            )
            print(f"interrupted ({how}): {interrupted() or 'nothing was left half-written'}", file=sys.stderr)
            return interrupt
        code = errors.exit_code_for(err)
        if code == errors.EXIT_UNEXPECTED:
            raise
        if getattr(err, "traceback_helps", True):
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return code
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous[0])
        if ended_cleanly:  # after a failure or an interrupt, horovod's threads may still be failing as the job exits
            threading.excepthook = previous[1]


def _raise_terminated(signum: int, frame: Any) -> None:
    raise errors.Terminated()


def _quiet_launcher_threads(default: Callable[[Any], None], args: Any) -> None:
    """A background thread's failure because Spark went away, or in horovod's launcher (its per-rank launch and
    Spark-job threads, when a rank fails or the job is stopped), is part of the failure or interrupt the job reports
    in one line, not a traceback of its own; any other thread's failure is shown as usual."""
    err = args.exc_value
    if err is not None and (errors.spark_stopped(err) or errors.raised_in(err, "horovod")):
        logging.getLogger(__name__).debug("thread %s ended: %s", getattr(args.thread, "name", "?"), err)
        return
    default(args)
