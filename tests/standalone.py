"""A Spark standalone cluster on the loopback address for the tests: one master and N workers, each worker a JVM
of its own with its own executor, started from the pyspark distribution's launch classes (``bin/spark-class``).

Unlike ``local[N]``, tasks run in separate executor processes, so a test can kill one executor and see what the
job does. Bounded in time: every wait has a deadline, and ``stop`` kills what it started, whatever state it is in.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pyspark

SPARK_HOME = Path(pyspark.__file__).parent
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@dataclass
class StandaloneCluster:
    workdir: Path
    workers: int = 2
    cores_per_worker: int = 1
    memory_per_worker: str = "4g"
    start_timeout: float = 90.0
    port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def master_url(self) -> str:
        return f"spark://{LOOPBACK}:{self.port}"

    def _spark_class(self, name: str, *args: str) -> subprocess.Popen:
        log = self.workdir / f"{name.rsplit('.', 1)[-1].lower()}-{len(self.processes)}.log"
        env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": LOOPBACK, "SPARK_NO_DAEMONIZE": "1"}
        with open(log, "w") as out:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                [str(SPARK_HOME / "bin" / "spark-class"), name, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # stop() ends the JVM and every executor and Python worker it started
            )
        self.processes.append(process)
        return process

    def start(self) -> StandaloneCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._spark_class(
            "org.apache.spark.deploy.master.Master",
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--webui-port",
            str(free_port()),
        )
        self._wait_for_log("master-0.log", r"I have been elected leader")
        for i in range(self.workers):
            work = self.workdir / f"worker-{i}"
            work.mkdir(exist_ok=True)
            self._spark_class(
                "org.apache.spark.deploy.worker.Worker",
                "--host",
                LOOPBACK,
                "--cores",
                str(self.cores_per_worker),
                "--memory",
                self.memory_per_worker,
                "--work-dir",
                str(work),
                "--webui-port",
                str(free_port()),
                self.master_url,
            )
        for i in range(self.workers):
            self._wait_for_log(f"worker-{i + 1}.log", r"Successfully registered with master")
        return self

    def _wait_for_log(self, name: str, pattern: str) -> None:
        deadline = time.time() + self.start_timeout
        path = self.workdir / name
        while time.time() < deadline:
            if path.exists() and re.search(pattern, path.read_text(errors="replace")):
                return
            for p in self.processes:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[1]} exited with {p.returncode}; see {self.workdir}")
            time.sleep(0.3)
        raise TimeoutError(f"no {pattern!r} in {path} after {self.start_timeout:.0f} s")

    def executors(self) -> dict[str, psutil.Process]:
        """The executor JVMs the workers started, by executor id."""
        found = {}
        for worker in self.processes[1:]:
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(worker.pid).children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        args = child.cmdline()
                        if "org.apache.spark.executor.CoarseGrainedExecutorBackend" in args:
                            found[args[args.index("--executor-id") + 1]] = child
        return found

    def stop(self) -> None:
        """SIGTERM to every JVM's process group, then SIGKILL to whatever of them and their descendants (Python
        workers, rank processes in sessions of their own) is still alive 20 s later."""
        descendants = []
        for p in self.processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                descendants += psutil.Process(p.pid).children(recursive=True)
        for p in reversed(self.processes):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.time() + 20
        for p in self.processes:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for child in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
