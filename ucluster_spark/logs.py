"""One console format for every process of a job: time, component, message (standard ``logging``).

Each module logs to ``logging.getLogger(__name__)``; the component shown is the module's short name
(``[train]``, ``[launcher]``, ``[simulate]``). Jobs configure it at start and set the level from ``run.verbose``;
code inside Spark tasks configures it again (idempotent), since executors are other processes.
"""

from __future__ import annotations

import logging
import sys
import time

ROOT_LOGGER = "ucluster_spark"
LEVELS = {0: logging.WARNING, 1: logging.INFO}
"""``run.verbose`` -> level (2 and more: DEBUG)."""


class ComponentFormatter(logging.Formatter):
    """``2026-11-27 22:55:01 [train] epoch 2/6 ...`` (``WARNING``/``ERROR`` are named, ``INFO`` is not)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        level = "" if record.levelno == logging.INFO else f"{record.levelname}: "
        text = f"{stamp} [{component(record.name)}] {level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record arrives (the jobs redirect it under spark-submit)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def component(logger_name: str) -> str:
    return logger_name.rsplit(".", 1)[-1]


def line(name: str, message: str) -> str:
    """A line in the console format for text that is not logged directly (rank 0's ``train.log``)."""
    return ComponentFormatter().format(logging.makeLogRecord({"name": name, "msg": message, "levelno": logging.INFO}))


def _not_py4j_connection_noise(record: logging.LogRecord) -> bool:
    """py4j logs "Exception while sending command." with a traceback on the root logger whenever the JVM is gone
    (spark-submit stopped under the job), then raises the same error to its caller, which the job reports in one
    line: the record only repeats it."""
    return not (record.getMessage().startswith("Exception while sending command") and "py4j" in record.pathname)


def configure(verbose: int = 1) -> None:
    """Send the package's records to stderr in the one format, at the level of ``run.verbose``."""
    root = logging.getLogger()
    if _not_py4j_connection_noise not in root.filters:
        root.addFilter(_not_py4j_connection_noise)
    logger = logging.getLogger(ROOT_LOGGER)
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(ComponentFormatter())
        logger.addHandler(handler)
        logger.propagate = False  # one line per record, whatever the root logger's handlers
    set_verbosity(verbose)


def set_verbosity(verbose: int) -> None:
    logging.getLogger(ROOT_LOGGER).setLevel(LEVELS.get(verbose, logging.DEBUG))
