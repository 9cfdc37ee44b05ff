"""Driver side: what both launchers share while the ranks run: the watchdog that stops the ranks once one has
failed, the ranks' failure reports it reads, and the driver's own signal handlers kept."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def failure_reports(failures_dir: Path) -> list[dict[str, Any]]:
    """The ranks' failure reports (``RunLayout.failures``), earliest first; one being written is skipped."""
    found = []
    for path in sorted(failures_dir.glob("rank-*.json")):
        with contextlib.suppress(OSError, ValueError):
            found.append(json.loads(path.read_text()))
    return sorted(found, key=lambda r: r.get("at", 0))


class FailureWatchdog:
    """Driver side: once a rank has reported a failure, give the others ``grace_seconds`` to exit by themselves,
    then stop them all. horovod.spark.run waits for every rank; a frozen or unreachable one would hold the job
    forever. SIGTERM to this process is horovod's own abort path (its launcher then terminates every rank's
    command and the Spark job is cancelled)."""

    def __init__(self, failures_dir: Path, grace_seconds: float, interval: float = 1.0,
                 abort: Callable[[], None] | None = None):  # fmt: skip
        self.failures_dir = failures_dir
        self.grace_seconds = grace_seconds
        self.abort = abort or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        self.interval = interval
        self.stopped_ranks = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="rank-failure-watchdog", daemon=True)

    def __enter__(self) -> FailureWatchdog:
        shutil.rmtree(self.failures_dir, ignore_errors=True)  # reports of an earlier attempt (before --resume)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def reports(self) -> list[dict[str, Any]]:
        return failure_reports(self.failures_dir)

    def _watch(self) -> None:
        first_seen = None
        while not self._stop.wait(self.interval):
            reports = self.reports()
            if not reports or self.stopped_ranks:
                continue
            if first_seen is None:
                first_seen = time.monotonic()
                log.warning(
                    "rank %s failed (%s); waiting up to %g s for the other ranks to exit",
                    reports[0]["rank"],
                    reports[0]["error"][:300],
                    self.grace_seconds,
                )
            elif time.monotonic() - first_seen >= self.grace_seconds:
                self.stopped_ranks = True
                log.warning("ranks still running %g s after the first failure: stopping them", self.grace_seconds)
                self.abort()

    def summary(self) -> str:
        lines = [f"rank {r['rank']} on {r['host']} failed: {r['error'][:500]}" for r in self.reports()]
        if self.stopped_ranks:
            lines.append(
                f"the ranks still running {self.grace_seconds:g} s later were stopped by the driver: a rank stopped "
                "responding (frozen process, lost network), so its peers' collectives timed out "
                "(HOROVOD_GLOO_TIMEOUT_SECONDS)"
            )
        return "\n".join(lines)


@contextlib.contextmanager
def restored_signal_handlers() -> Iterator[None]:
    """horovod's launcher installs SIGINT/SIGTERM handlers that only set its abort event; put ours back after, or
    the driver would ignore Ctrl-C and SIGTERM for the rest of its life."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
