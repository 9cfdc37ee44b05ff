"""Executor side: one task of the barrier launcher's stage. It runs in a Spark Python worker and starts one rank.

The tasks of a barrier stage start together; each picks a free port on its executor's host, the addresses are
exchanged with ``BarrierTaskContext.allGather`` (in partition order, so partition i is rank i), and each task runs
its rank in a fresh Python process with ``TF_CONFIG`` naming every worker (``worker.py``:
``MultiWorkerMirroredStrategy`` must be created before anything else in TensorFlow's process, and a Spark Python
worker may be reused). The rank process dies with the task (``PR_SET_PDEATHSIG``): when Spark kills a task, or
its executor dies, no rank is left behind. No TensorFlow import here.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ucluster_spark import _env, errors, store

RANK_ENV = "UCLUSTER_RANK"
"""The rank of the process, for its failure report (Horovod's ranks have ``HOROVOD_RANK``)."""


def free_address(host: str) -> str:
    """``host:port`` of a port free on this host now, for this rank's gRPC server."""
    with socket.socket() as s:
        s.bind(("", 0))
        return f"{host}:{s.getsockname()[1]}"


def tf_config(workers: list[str], rank: int) -> str:
    """``TF_CONFIG`` for worker ``rank`` of ``workers`` (what ``TFConfigClusterResolver`` reads)."""
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}})


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the task's process dies (Linux; elsewhere nothing)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def describe_exit(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory, or killed from outside)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    meaning = errors.RANK_EXIT_MEANINGS.get(code)
    return f"exited with code {code}" + (f" ({meaning})" if meaning else "")


def run_rank_task(cfg_dict: dict[str, Any], plan_dict: dict[str, Any], env: dict[str, str | None], _) -> Iterator[str]:
    """``mapPartitions`` body of the barrier stage: this partition's rank, its result as one JSON string."""
    from pyspark import BarrierTaskContext

    context = BarrierTaskContext.get()
    rank = context.partitionId()
    if store.RunLayout(plan_dict["run_dir"]).placement(rank).exists():
        # This rank already started in this launch (the driver clears the records first): Spark is re-running the
        # failed barrier stage, and a silent restart would redo the epochs. The driver cancels the job at the first
        # failure and tells the user to --resume; this only guards the moment before it does.
        raise RuntimeError("the training stage failed before; not starting it again (the driver asks for --resume)")
    host = context.getTaskInfos()[rank].address.rsplit(":", 1)[0]
    workers = context.allGather(free_address(host))
    process_env = _env.with_changes(
        {**os.environ, RANK_ENV: str(rank), "TF_CONFIG": tf_config(list(workers), rank)}, env, keep_set=False
    )
    with tempfile.TemporaryDirectory(prefix=f"ucluster-rank-{rank}-") as scratch:
        arguments, result = Path(scratch) / "arguments.json", Path(scratch) / "result.json"
        arguments.write_text(json.dumps({"cfg": cfg_dict, "plan": plan_dict}))
        process = subprocess.Popen(
            [sys.executable, "-m", "ucluster_spark.executor.rank.worker", str(arguments), str(result)],
            env=process_env,
            preexec_fn=_die_with_parent,
        )
        code = process.wait()
        if code != 0:
            raise RuntimeError(f"rank {rank} on {socket.gethostname()} (pid {process.pid}) {describe_exit(code)}")
        yield result.read_text()
