"""Every failure a job reports, each class with the exit code a scheduler sees for it.

A scheduler acts on the code alone: ``2`` means fix the input first (rerunning cannot help); ``3``, ``4``, ``5`` mean
the work itself failed and a rerun may succeed (training resumes from its last checkpoint); ``75`` (sysexits'
``EX_TEMPFAIL``) means another attempt holds the resource: retry later. Anything else (exit ``1``, a traceback) is a
bug or a broken environment.
"""

from __future__ import annotations

import errno
import os
import re
import traceback
from collections.abc import Iterator

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2
EXIT_TRAINING_FAILED = 3
EXIT_EVALUATION_FAILED = 4
EXIT_DATA_FAILED = 5
EXIT_BUSY = 75

RANK_OUT_OF_MEMORY = errno.ENOMEM  # 12
RANK_OUT_OF_DISK = errno.ENOSPC  # 28
"""Exit codes of a rank process that ran out of a resource (the errno numbers, so they read as their cause): the
code reaches the driver even when the disk is too full for the rank's failure report."""
RANK_EXIT_MEANINGS = {
    RANK_OUT_OF_MEMORY: "the rank ran out of memory",
    RANK_OUT_OF_DISK: "the rank ran out of disk space",
    137: "the rank was killed (SIGKILL: out of memory, a lost or preempted executor)",
}


class JobError(Exception):
    """A failure a job knows how to report: one message, and ``exit_code``. ``traceback_helps``: whether the job
    prints the Python traceback before the message (not for a refusal or an outcome the message fully explains)."""

    exit_code = EXIT_UNEXPECTED
    traceback_helps = True


class BadInput(JobError, ValueError):
    """Configuration, arguments, input data or an output path that cannot be used; the message names it."""

    exit_code = EXIT_BAD_INPUT
    traceback_helps = False


class ConfigError(BadInput):
    """A configuration file, override or flag that cannot be used; the message names where the value came from,
    the key and the value."""


class OutputExists(BadInput, FileExistsError):
    """An output path holds something this job must not replace."""


class InputMissing(BadInput, FileNotFoundError):
    """A path given as input is not there, or is not what it should be."""


INPUT_ERROR_MARKER = "UCLUSTER_INPUT_ERROR"
"""Prefix of every ``InputFileError`` message, so the driver can pull it out of a Spark task failure."""


class InputFileError(BadInput):
    """A bad input file or value met inside an executor; the message names the file, the dataset/column and the
    reason."""

    def __init__(self, message: str):
        super().__init__(f"{INPUT_ERROR_MARKER}: {message}")
        self.detail = message


class TrainingFailed(JobError, RuntimeError):
    """Training or its Spark/Horovod stage failed with valid inputs: may be transient, ``--resume`` continues it."""

    exit_code = EXIT_TRAINING_FAILED


class TrainingDiverged(TrainingFailed):
    """The loss or the embedding stopped being finite: the run stops at once; the message names where, the last good
    checkpoint and the setting most likely at fault."""

    traceback_helps = False


class EvaluationFailed(JobError, RuntimeError):
    """The cluster-assignment job failed with valid inputs: may be transient."""

    exit_code = EXIT_EVALUATION_FAILED


class DataFailed(JobError, RuntimeError):
    """Generating or preparing a dataset failed with valid inputs: may be transient."""

    exit_code = EXIT_DATA_FAILED


class Busy(JobError, RuntimeError):
    """Another job holds what this one needs (an output being written, a pipeline run id): retry later."""

    exit_code = EXIT_BUSY
    traceback_helps = False


def exit_code_for(err: BaseException) -> int:
    return err.exit_code if isinstance(err, JobError) else EXIT_UNEXPECTED


EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as a shell reports it
EXIT_TERMINATED = 143  # 128 + SIGTERM: a scheduler stopped the job


class Terminated(BaseException):
    """SIGTERM to the job's Python process (a plain ``ucluster-*`` command): unwinds like Ctrl-C, so locks are
    released and staging is removed on the way out."""


UNREACHABLE_JVM = "its text is in the JVM, which cannot be reached"
SPARK_GONE = (
    "SparkContext was shut down",
    "SparkContext has been shutdown",
    "Cannot call methods on a stopped SparkContext",
    "Answer from Java side is empty",
    "Error while sending or receiving",
    "Py4JNetworkError",
    "does not exist in the JVM",
    UNREACHABLE_JVM,
)
"""What py4j and Spark say when the driver's JVM stops under a running job: spark-submit got SIGTERM or Ctrl-C
(its JVM shuts the SparkContext down and exits; the job's Python process only sees its calls fail)."""


def safe_text(err: BaseException) -> str:
    """``str(err)``, or what can be said without it: a py4j error fetches its text from the JVM, which a signal to
    spark-submit may already have stopped (then ``str`` itself raises)."""
    try:
        return str(err)
    except Exception as failed:
        return f"{type(err).__name__} ({UNREACHABLE_JVM}: {type(failed).__name__})"


BARE_PY4J_ERROR = re.compile(r"An error occurred while calling [\w$.]+")
"""py4j's error for a call the JVM answered with a failure and nothing else — no Java exception, no trace: what its
gateway answers while spark-submit's JVM shuts down under the call (seen with Ctrl-C, pyspark 4)."""


def spark_stopped(err: BaseException) -> bool:
    """``err`` (or what caused it) is the SparkContext or its JVM going away under the job: Spark's or py4j's words
    for it, a connection refused to py4j (the JVM has exited), or a py4j call failed with no word from the JVM."""
    return any(
        type(cause).__name__ == "Py4JNetworkError"
        or any(marker in safe_text(cause) for marker in SPARK_GONE)
        or (isinstance(cause, ConnectionError) and raised_in(cause, "py4j"))
        or (type(cause).__name__ == "Py4JError" and BARE_PY4J_ERROR.fullmatch(safe_text(cause).strip()) is not None)
        for cause in causes(err)
    )


def interrupt_exit_code(err: BaseException) -> int | None:
    """130 (Ctrl-C) or 143 (SIGTERM, or Spark shut down under the job) if ``err`` is an interrupt, else None. An
    error raised while the job unwound from an interrupt counts as that interrupt: Ctrl-C reaches spark-submit's JVM
    too, so stopping the session on the way out can fail with py4j's words for a JVM that is gone."""
    return {KeyboardInterrupt: EXIT_INTERRUPTED, Terminated: EXIT_TERMINATED}.get(interrupt_kind(err)) or (
        EXIT_TERMINATED if spark_stopped(err) else None
    )


def interrupt_kind(err: BaseException) -> type[BaseException] | None:
    """``KeyboardInterrupt`` or ``Terminated`` if ``err`` is one or was raised while handling one, else None."""
    return next((type(c) for c in causes(err) if isinstance(c, KeyboardInterrupt | Terminated)), None)


def raised_in(err: BaseException, package: str) -> bool:
    """``err`` was raised inside ``package``'s code (a frame of its traceback is in a folder of that name)."""
    frames = traceback.extract_tb(err.__traceback__) if err.__traceback__ else []
    return any(f"{os.sep}{package}{os.sep}" in frame.filename for frame in frames)


def causes(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__
