"""A rank that runs out of a resource: what ran out, said first in its failure report, and the exit code that
carries it to the driver when the disk is too full for the report (the codes are in ``errors``)."""

from __future__ import annotations

import errno
import os
import shutil

from ucluster_spark.errors import RANK_OUT_OF_DISK, RANK_OUT_OF_MEMORY, causes


class MemoryLimitExceeded(MemoryError):
    """A rank's resident memory passed ``run.rank_memory_limit_mb``."""


def _exhaustion(err: BaseException, near: str) -> tuple[int, str] | None:
    """(the rank exit code, what ran out) if ``err`` or what caused it is a resource running out."""
    for cause in causes(err):
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return RANK_OUT_OF_DISK, f"out of disk space{_free_space(cause.filename or near)}: {cause}"
        if isinstance(cause, MemoryError) or type(cause).__name__ == "ResourceExhaustedError":
            first = str(cause).strip().splitlines()[0] if str(cause) else ""
            return RANK_OUT_OF_MEMORY, f"out of memory: {type(cause).__name__}: {first}"
        if "No space left on device" in str(cause) or "Disk quota exceeded" in str(cause):
            last = str(cause).strip().splitlines()[-1][:300]
            return RANK_OUT_OF_DISK, f"out of disk space{_free_space(near)}: {last}"
    return None


def exhausted_resource(err: BaseException, near: str = "") -> str | None:
    """What ran out, if ``err`` (or what caused it) is a resource running out: the disk (with the filesystem and
    what it has left: the one of the file the error names, else of ``near``, e.g. the run directory) or memory;
    None for any other failure."""
    found = _exhaustion(err, near)
    return found[1] if found else None


def _free_space(path: str) -> str:
    """' on DIR (N MB free of M MB)' for the filesystem holding ``path``, or '' if it cannot be told."""
    directory = os.path.abspath(path) if path else ""
    while directory and not os.path.isdir(directory):
        directory = os.path.dirname(directory)
    if not directory:
        return ""
    try:
        usage = shutil.disk_usage(directory)
    except OSError:
        return ""
    return f" on {directory} ({usage.free / 2**20:.0f} MB free of {usage.total / 2**20:.0f} MB)"


def rank_exit_code_for(err: BaseException) -> int | None:
    """The exit code a rank process ends with for ``err`` when a resource ran out (None: let it raise)."""
    found = _exhaustion(err, "")
    return found[0] if found else None
