"""Driver side: rank 0's progress (``train.log``, which rank 0 appends to) echoed on the driver's console while
the ranks train."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def echo_file(path: Path, out=None, interval: float = 0.5) -> Iterator[None]:
    """Copy lines appended to ``path`` (rank 0's progress) to ``out`` (default: the current stderr) while the
    block runs, then the rest."""
    out = out or sys.stderr
    stop = threading.Event()

    start = path.stat().st_size if path.exists() else 0  # a resumed run appends to its log

    def follow() -> None:
        position = start
        while True:
            finished = stop.wait(interval)
            if path.exists():
                with open(path) as handle:
                    handle.seek(position)
                    chunk = handle.read()
                    position = handle.tell()
                if chunk:
                    out.write(chunk)
                    out.flush()
            if finished:
                return

    thread = threading.Thread(target=follow, name="progress-echo", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
