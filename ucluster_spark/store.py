"""Paths, atomic writes and one writer per output: an output exists whole under its final name, or not at all.

Everything is written under a temporary sibling name and renamed into place (a rename within one filesystem is
atomic on POSIX), so a crash or a kill never leaves a half-written file or directory where a reader looks. A job
holds its output's lock (``exclusive_output``) while it writes, so two jobs never write one output at once, and
the staging a killed writer left behind is removed by the next one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ucluster_spark.errors import BadInput, Busy, OutputExists

log = logging.getLogger(__name__)

DBFS_PREFIXES = ("dbfs:/", "file:/dbfs/", "/dbfs/")


SUPPORTED_LOCATIONS = "a local path, a file:// URL or a dbfs:/ path"


def unsupported_location(path: str | Path) -> str:
    """Why ``path`` cannot be read or written here ("" when it can). Object stores (s3://, abfss://, gs://, ...)
    have no atomic rename, and every output here appears whole under its final name by one; a mount of the bucket
    (Databricks' /dbfs, s3fs, blobfuse, gcsfuse) is a path like any other."""
    text = str(path)
    if "://" not in text or text.startswith("file://") or text.startswith(DBFS_PREFIXES):
        return ""
    scheme = text.split("://", 1)[0]
    return (f"{text}: {scheme}:// is not supported (datasets and runs are read and written through a filesystem, "
            "outputs renamed into place, which an object store cannot do atomically); use "
            f"{SUPPORTED_LOCATIONS}, e.g. the bucket mounted on the cluster")  # fmt: skip


def local_path(path: str | Path) -> Path:
    """A filesystem path for ``path``: ``file://`` URLs and Databricks' ``dbfs:/`` forms (FUSE mount)."""
    problem = unsupported_location(path)
    if problem:
        raise BadInput(problem)
    text = str(path)
    if text.startswith("file://"):
        text = text[len("file://") :]
    for prefix in DBFS_PREFIXES:
        if text.startswith(prefix):
            return Path("/dbfs") / text[len(prefix) :]
    return Path(text).absolute()


def file_url(path: str | Path) -> str:
    """The ``file://`` URL petastorm and Spark expect for a local path."""
    return local_path(path).as_uri()


STAGING_MARK = ".tmp-"


def temporary_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}{STAGING_MARK}{uuid.uuid4().hex[:8]}")


def check_output_location(path: str | Path, flag: str) -> Path:
    """An output's place can be written: every existing ancestor is a directory we may write into. Checked before
    any work, so ``--output notes.txt/run`` is one line naming the file, not a traceback halfway through."""
    final = local_path(path)
    ancestor = final.parent
    while not ancestor.exists() and not ancestor.is_symlink():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise BadInput(f"{flag} {path}: {ancestor} is a file, not a directory; choose another {flag}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise BadInput(f"{flag} {path}: {ancestor} is not writable by this user; choose another {flag}")
    return final


class OutputBusy(Busy):
    """Another job is writing the same output."""


def _lock_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.lock")


def _holder(handle) -> str:
    handle.seek(0)
    try:
        who = json.loads(handle.read() or "{}")
    except ValueError:
        who = {}
    if not who:
        return "a job that has just started"
    return f"pid {who.get('pid')} on {who.get('host')}, started {who.get('started_at')}: {who.get('command', '')}"


@contextlib.contextmanager
def exclusive_output(
    final: str | Path, kind: str, flag: str = "--output", is_ours: Callable[[Path], bool] = lambda _: False
) -> Iterator[None]:
    """Hold ``final``'s lock while the block writes it: a second writer is refused at once (``OutputBusy``, exit 75)
    with the holder's host, pid, start time and command. The lock is an ``flock`` on ``.NAME.lock`` beside the
    output, so it dies with its process (no stale lock after a kill). The staging a killed writer left is removed
    first: beside ``final``, and inside it when ``is_ours(final)`` (an output written in place, like a run
    directory). On a filesystem without locks (some FUSE mounts) the job goes on with a warning."""
    final = check_output_location(final, flag)
    lock = _lock_path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(lock, "a+")  # noqa: SIM115 - held until the block ends
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            handle.close()
            raise OutputBusy(
                f"{final}: another job is writing this {kind} ({holder}); wait for it to finish and retry (exit 75), "
                "or write elsewhere"
            ) from None
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                handle.close()
                raise
            handle.close()
            log.warning("%s: this filesystem has no file locks (%s): one writer at a time is not enforced", final, err)
            remove_stale_staging(final, inside=is_ours(final))
            yield
            return
        try:  # the previous holder removes the file as it lets go: make sure ours is still the one at ``lock``
            current = os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]
        handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "command": command,
                                 "started_at": datetime.now(UTC).isoformat(timespec="seconds")}))  # fmt: skip
        handle.flush()
        remove_stale_staging(final, inside=is_ours(final))
        yield
    finally:
        lock.unlink(missing_ok=True)
        handle.close()


def remove_stale_staging(final: str | Path, inside: bool = False) -> list[Path]:
    """Staging left by a writer of ``final`` that was killed mid-write (``.NAME.tmp-*`` beside it; with ``inside``,
    also within it, e.g. a checkpoint being written): never a complete output, and at scale gigabytes. Only ever
    called by the holder of ``final``'s lock, so no live writer owns them. Says what it removed."""
    final = local_path(final)
    stale = sorted(final.parent.glob(f".{final.name}{STAGING_MARK}*"))
    if inside and final.is_dir():
        stale += sorted(final.rglob(f".*{STAGING_MARK}*"))
    removed = []
    for path in stale:
        if not path.exists() and not path.is_symlink():
            continue  # inside one removed already
        removed.append(path)
        size = _size_mb(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        log.warning("removed %s (%.1f MB), left by a writer of %s that was stopped mid-write", path, size, final.name)
    return removed


def _size_mb(path: Path) -> float:
    if not path.is_dir():
        return path.lstat().st_size / 2**20 if path.exists() else 0.0
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


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


def trained_dataset(finished: dict[str, Any]) -> Path | None:
    """The dataset a finished run was trained on, from its ``metrics.json`` (the evaluate job's default input);
    None for a model trained elsewhere (``ucluster-import``)."""
    return local_path(finished["data"]["train_url"]).parent if finished.get("data") else None


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
    def tensorboard(self) -> Path:
        """TensorBoard event files: rank 0 adds every epoch as it ends (``executor/rank/curves.py``)."""
        return self.root / "tensorboard"

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
    def data(self) -> Path:
        return self.root / "data"

    @property
    def train(self) -> RunLayout:
        return RunLayout(self.root / "train")

    @property
    def evaluate(self) -> EvaluationLayout:
        return EvaluationLayout(self.root / "evaluate")
