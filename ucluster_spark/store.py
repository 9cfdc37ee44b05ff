"""Paths and atomic writes: an output exists whole under its final name, or not at all.

Everything is written under a temporary sibling name and renamed into place (a rename within one filesystem is
atomic on POSIX), so a crash or a kill never leaves a half-written file or directory where a reader looks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ucluster_spark.errors import OutputExists

DBFS_PREFIXES = ("dbfs:/", "file:/dbfs/", "/dbfs/")


def local_path(path: str | Path) -> Path:
    """A filesystem path for ``path``: ``file://`` URLs and Databricks' ``dbfs:/`` forms (FUSE mount)."""
    text = str(path)
    if text.startswith("file://"):
        text = text[len("file://") :]
    for prefix in DBFS_PREFIXES:
        if text.startswith(prefix):
            return Path("/dbfs") / text[len(prefix) :]
    if "://" in text:
        raise ValueError(
            f"{text!r}: only local paths, file:// URLs and dbfs:/ paths can be written by this step; "
            "mount remote storage or use a dbfs:/ path"
        )
    return Path(text).absolute()


def file_url(path: str | Path) -> str:
    """The ``file://`` URL petastorm and Spark expect for a local path."""
    return local_path(path).as_uri()


def temporary_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")


def _is_empty_directory(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _listing(path: Path, shown: int = 4) -> str:
    if not path.is_dir():
        return "a file"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    more = f", … {len(names) - shown} more" if len(names) > shown else ""
    return "holds " + ", ".join(names[:shown]) + more


def check_replaceable(final: str | Path, kind: str, is_ours: Callable[[Path], bool], overwrite: bool) -> None:
    """Only ever replace what this project wrote, proven by its marker file (``is_ours``), and only when asked:
    anything else at ``final`` (a user's files, a file, another kind of output) is refused whatever the flag.
    A missing path or an empty directory is free to use."""
    final = local_path(final)
    if not final.exists() or _is_empty_directory(final):
        return
    if not (final.is_dir() and is_ours(final)):
        raise OutputExists(
            f"{final} exists and is not a {kind} ({_listing(final)}); refusing to write there, with or without "
            "--overwrite: choose another --output"
        )
    if not overwrite:
        raise OutputExists(f"{final} already holds a {kind}; pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_directory(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` only if the block finishes without an exception.
    Callers that replace an existing output check first that it is theirs (``check_replaceable``)."""
    final = local_path(final)
    if final.exists() and not overwrite and not _is_empty_directory(final):
        raise OutputExists(f"{final} already exists; refusing to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_sibling(final)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():  # replaced by a rename: the old content stays whole until the new one is in place
        trash = temporary_sibling(final)
        final.rename(trash)
        staging.rename(final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        staging.rename(final)


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = local_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_sibling(path)
    try:
        with open(staging, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def read_json(path: str | Path) -> Any:
    return json.loads(local_path(path).read_text())


def atomic_write_json(path: str | Path, payload: Any) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def default_run_dir(root: str | Path = "runs") -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return local_path(root) / stamp


WEIGHTS_FILE = "weights.h5"
"""Keras weights (with centroids and batch-norm statistics), in a run's model/ and in every checkpoint."""


class _OutputLayout:
    """What a training run and an evaluation output both hold: ``metrics.json``, written last (the output is
    complete when it exists), and ``plots/``."""

    def __init__(self, root: str | Path):
        self.root = local_path(root)

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"


class RunLayout(_OutputLayout):
    """Every name inside one training run directory (the only place they are spelled)."""

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def weights(self) -> Path:
        return self.model_dir / WEIGHTS_FILE

    @property
    def model_config(self) -> Path:
        return self.model_dir / "config.json"

    @property
    def history(self) -> Path:
        return self.root / "history.json"

    @property
    def train_log(self) -> Path:
        """Rank 0's progress, one line per event; a resumed run appends to it."""
        return self.root / "train.log"

    @property
    def checkpoints(self) -> Path:
        """``epoch-NNNN/`` directories and the ``LATEST`` pointer (``checkpoint.py`` owns what is inside)."""
        return self.root / "checkpoints"

    @property
    def failures(self) -> Path:
        """``rank-N.json`` written by a rank that raised: how the driver learns of a failure while a peer hangs."""
        return self.root / "failures"

    def failure_report(self, rank: int) -> Path:
        return self.failures / f"rank-{rank}.json"

    @property
    def placements(self) -> Path:
        """``rank-N.json`` written by every rank as it starts (host, pid): names the rank and host of one that is
        lost with its executor, which leaves no failure report."""
        return self.root / "ranks"

    def placement(self, rank: int) -> Path:
        return self.placements / f"rank-{rank}.json"


class EvaluationLayout(_OutputLayout):
    """Every name inside one output of the evaluate job."""

    @property
    def assignments(self) -> Path:
        """Parquet, one row per jet (``schema.assignment_spark_schema``)."""
        return self.root / "assignments"

    def is_complete(self) -> bool:
        """An output this job wrote: its assignments and its metrics."""
        return self.metrics.is_file() and self.assignments.is_dir()


class PipelineLayout:
    """Every name inside one pipeline run, ``<pipeline.root>/<run id>/``."""

    def __init__(self, root: str | Path, run_id: str):
        self.root = local_path(root) / run_id

    @property
    def config(self) -> Path:
        """The first attempt's configuration: a rerun with another one is refused."""
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def train(self) -> RunLayout:
        return RunLayout(self.root / "train")

    @property
    def evaluate(self) -> EvaluationLayout:
        return EvaluationLayout(self.root / "evaluate")
