"""Every failure a job reports, each class with the exit code a scheduler sees for it.

A scheduler acts on the code alone: ``2`` means fix the input first (rerunning cannot help); ``3``, ``4``, ``5`` mean
the work itself failed and a rerun may succeed (training resumes from its last checkpoint); ``75`` (sysexits'
``EX_TEMPFAIL``) means another attempt holds the resource: retry later. Anything else (exit ``1``, a traceback) is a
bug or a broken environment.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2
EXIT_TRAINING_FAILED = 3
EXIT_EVALUATION_FAILED = 4
EXIT_DATA_FAILED = 5
EXIT_BUSY = 75


class JobError(Exception):
    """A failure a job knows how to report: one message, and ``exit_code``."""

    exit_code = EXIT_UNEXPECTED


class BadInput(JobError, ValueError):
    """Configuration, arguments, input data or an output path that cannot be used; the message names it."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(BadInput):
    """A configuration file, override or flag that cannot be used; the message names where the value came from,
    the key and the value."""


class OutputExists(BadInput, FileExistsError):
    """An output path holds something this job must not replace."""


class InputMissing(BadInput, FileNotFoundError):
    """A path given as input is not there, or is not what it should be."""


class TrainingFailed(JobError, RuntimeError):
    """Training or its Spark/Horovod stage failed with valid inputs: may be transient, ``--resume`` continues it."""

    exit_code = EXIT_TRAINING_FAILED


class EvaluationFailed(JobError, RuntimeError):
    """The cluster-assignment job failed with valid inputs: may be transient."""

    exit_code = EXIT_EVALUATION_FAILED


class DataFailed(JobError, RuntimeError):
    """Generating or preparing a dataset failed with valid inputs: may be transient."""

    exit_code = EXIT_DATA_FAILED


class Busy(JobError, RuntimeError):
    """Another attempt holds what this one needs (a pipeline run id): retry later."""

    exit_code = EXIT_BUSY


def exit_code_for(err: BaseException) -> int:
    return err.exit_code if isinstance(err, JobError) else EXIT_UNEXPECTED
