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


PY4J_ECHOES = ("Exception while sending command", "KeyboardInterrupt while sending command")


def _not_py4j_connection_noise(record: logging.LogRecord) -> bool:
    """py4j logs "Exception while sending command." with a traceback on the root logger whenever the JVM is gone
    (spark-submit stopped under the job), and "KeyboardInterrupt while sending command." when Ctrl-C comes during a
    call, then raises the same error to its caller, which the job reports in one line: the record only repeats it."""
    return not (record.getMessage().startswith(PY4J_ECHOES) and "py4j" in record.pathname)


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


def epoch_line(record: dict, epochs: int) -> str:
    """What a person watches at the end of an epoch, in one console line (~160 characters); the whole record is
    in ``history.json``."""
    parts = [
        f"epoch {record['epoch'] + 1}/{epochs}",
        f"loss {record['loss']:.4g} focal {record['focal_loss']:.4g} clust {record['clustering_loss_per_jet']:.3g}",
        f"α {record['alpha']:g}",
        f"lr {record['learning_rate']:.2g}",
        f"{record['jets_per_second']:.0f} jets/s",
    ]
    if "val_clustering_accuracy" in record:
        sizes = "/".join(str(n) for n in record["val_cluster_sizes"])
        parts.append(f"| val acc {record['val_clustering_accuracy']:.3f} nmi {record['val_nmi']:.3f} sizes {sizes}")
    return " ".join(parts)


def validation_point_line(point: dict) -> str:
    """One validation point of the clustering phase in one console line; the point itself is in the history."""
    offsets = "/".join("empty" if d is None else f"{d:.3g}" for d in point["centroid_offsets"])
    changed = "" if point["assignment_change"] is None else f" changed {point['assignment_change']:.3f}"
    return (
        f"step {point['global_step']} (clustering {point['clustering_step']}) α {point['alpha']:g} "
        f"val acc {point['val_clustering_accuracy']:.3f}{changed} centroid offsets {offsets}"
    )
