"""Executor side: a rank's process environment: thread pools and core binding, injected faults for the tests,
the failure report the driver's watchdog reads, and rank 0's progress log."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil

from ucluster_spark import logs, store
from ucluster_spark.executor.rank.exhaustion import MemoryLimitExceeded, exhausted_resource, rank_exit_code_for

FAULT_ENV = "UCLUSTER_INJECT_FAULT"
"""``kill:RANK:EPOCH:STEP`` makes that rank SIGKILL itself before that step (0-based epoch and step), ``stop:...``
makes it SIGSTOP itself (a frozen worker), ``allocate:...`` makes it hold 4 GiB for up to 30 s (a memory leak),
``fill_disk:...`` fills the run directory's filesystem (only ever on a small one made for the test): how the tests
check that a lost, hung or starved worker fails the job within a bounded time, names the cause, and that the run
resumes from its last checkpoint."""
ALLOCATE_BYTES = 4 * 2**30


def fault_injector(rank: int, run_dir: str = "") -> Callable[[int, int], None] | None:
    """This rank's injected fault as a hook called before each step ``(epoch, step)``; None (nothing installed, no
    cost per step) unless ``UCLUSTER_INJECT_FAULT`` names one."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return None
    kind, *where = spec.split(":")
    fault_rank, fault_epoch, fault_step = (int(v) for v in where)
    if fault_rank != rank:
        return None

    def maybe_fail(epoch: int, step: int) -> None:
        if (epoch, step) == (fault_epoch, fault_step):
            inject_fault(kind, run_dir)

    return maybe_fail


def inject_fault(kind: str, run_dir: str) -> None:
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "stop":  # frozen, not dead: the process and its sockets stay, the peers hear nothing
        os.kill(os.getpid(), signal.SIGSTOP)
    elif kind == "allocate":  # touched, so resident; released after 30 s if nothing stopped the rank by then
        held = bytearray(ALLOCATE_BYTES)
        for page in range(0, len(held), 4096):
            held[page] = 1
        time.sleep(30)
        del held
    elif kind == "fill_disk":
        with contextlib.suppress(OSError), open(Path(run_dir) / "fill-disk", "ab") as filler:
            while True:
                filler.write(bytes(2**20))
                filler.flush()


class ProgressLog:
    """Rank 0's progress lines, appended to ``RUN_DIR/train.log``; the driver echoes the file as it grows.

    horovod.spark.run forwards rank output in 64 KiB chunks, far too late to show progress, so the run directory
    (which rank 0 writes to anyway) carries it instead.
    """

    def __init__(self, rank: int, run_dir: str):
        self.rank = rank
        self.path = store.RunLayout(run_dir).train_log

    def __call__(self, message: str) -> None:
        if self.rank != 0:
            return
        with open(self.path, "a") as handle:
            handle.write(logs.line("ucluster_spark.train", message) + "\n")


def configure_threads(train_cfg, local_rank: int = 0) -> None:
    """Fixed TensorFlow thread pools (ranks must not oversubscribe the cores) and one GPU per local rank."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:  # NCCL path: rank i on GPU i of its host
        tf.config.experimental.set_memory_growth(gpus[local_rank % len(gpus)], True)
        tf.config.set_visible_devices(gpus[local_rank % len(gpus)], "GPU")
    tf.config.threading.set_intra_op_parallelism_threads(train_cfg.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(train_cfg.inter_op_threads)


def usable_cores() -> list[int]:
    """The cores this process may run on (Linux affinity mask; elsewhere all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def core_share(allowed: Sequence[int], local_rank: int, local_size: int) -> list[int]:
    """This rank's equal, contiguous share of the cores its process may use (empty: fewer cores than ranks)."""
    cores = sorted(allowed)
    per_rank = len(cores) // local_size
    return cores[local_rank * per_rank : (local_rank + 1) * per_rank]


def bind_threads(cores: Sequence[int]) -> int:
    """Bind every thread of this process (TensorFlow's pools, Horovod's and Gloo's threads, readers) to
    ``cores``; threads started later inherit it. Ranks sharing cores make each other wait at every allreduce.
    Returns the number of threads bound."""
    threads = [thread.id for thread in psutil.Process().threads()]
    for tid in threads:
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(tid, cores)
    return len(threads)


def bind_rank_to_cores(local_rank: int, local_size: int) -> str:
    """``run.bind_ranks_to_cores``: this rank's threads onto its share of the host's cores; says what it did."""
    if not hasattr(os, "sched_setaffinity"):
        return "bind_ranks_to_cores: no thread affinity on this platform, not bound"
    cores = core_share(usable_cores(), local_rank, local_size)
    if not cores:
        return "bind_ranks_to_cores: fewer cores than ranks on this host, not bound"
    bind_threads(cores)
    return f"each rank bound to {len(cores)} core(s), rank 0 to {cores}"


def record_placement(run_dir: str, rank: int) -> None:
    """``RUN_DIR/ranks/rank-N.json``: where this rank runs. A rank lost with its executor or host writes nothing
    more; the driver names it from this record."""
    record = {"rank": rank, "host": socket.gethostname(), "pid": os.getpid(), "at": time.time()}
    with contextlib.suppress(OSError):
        store.atomic_write_json(store.RunLayout(run_dir).placement(rank), record)


def report_failure(run_dir: str, err: BaseException) -> None:
    """``RUN_DIR/failures/rank-N.json``: horovod.spark.run only reports exit codes once every rank has exited, so a
    rank stuck on a frozen peer would keep the driver waiting; this file lets the driver act on the first failure."""
    rank = os.environ.get("HOROVOD_RANK") or os.environ.get("UCLUSTER_RANK", "unknown")  # either launcher's
    text = str(err)
    exhausted = exhausted_resource(err, near=run_dir)  # out of disk or memory: said first
    # TensorFlow puts the op's traceback first, then the cause (e.g. a Gloo timeout), then "[[{{node ...}}]]".
    lines = [line.strip() for line in text.splitlines()]
    cause = next((line for line in reversed(lines) if line and not line.startswith(("[[", "File "))), "")
    report = {
        "rank": rank,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "kind": type(err).__name__,
        "error": (exhausted or (cause if cause.startswith(type(err).__name__) else f"{type(err).__name__}: {cause}"))[
            :1000
        ],
        "details": text[-4000:],
        "at": time.time(),
    }
    with contextlib.suppress(OSError):  # the report is a courtesy; the original error is what must surface
        store.atomic_write_json(store.RunLayout(run_dir).failure_report(rank), report)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def resident_mb() -> float:
    """This process's resident memory now."""
    return psutil.Process().memory_info().rss / 2**20


def exit_for_resource(run_dir: str, err: BaseException) -> None:
    """A rank that ran out of disk or memory reports it and ends with that resource's exit code at once
    (``errors.RANK_EXIT_MEANINGS``): the code reaches the driver even if the disk is too full for the report, and
    nothing more is attempted in a process that cannot allocate. Returns for any other failure."""
    code = rank_exit_code_for(err)
    if code is None:
        return
    report_failure(run_dir, err)
    print(f"error: {exhausted_resource(err, near=run_dir)}", file=sys.stderr, flush=True)
    os._exit(code)


@contextlib.contextmanager
def memory_guard(limit_mb: float, run_dir: str, interval: float = 0.5) -> Iterator[None]:
    """``run.rank_memory_limit_mb``: a rank whose resident memory passes the limit fails at once, naming it,
    instead of being killed without a word by the kernel or the cluster manager (YARN, Kubernetes) a moment later.
    The run resumes from its last checkpoint like after any other failure."""
    if not limit_mb:
        yield
        return
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(interval):
            rss = resident_mb()
            if rss > limit_mb:
                message = (
                    f"resident memory {rss:.0f} MB on {socket.gethostname()} passed run.rank_memory_limit_mb="
                    f"{limit_mb:g}; give the executors more memory, or lower train.batch_size"
                )
                exit_for_resource(run_dir, MemoryLimitExceeded(message))

    thread = threading.Thread(target=watch, name="rank-memory-guard", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
