"""What a benchmark's numbers were measured on: the machine (numbers differ by machine, their ratios much less),
and the tree of an earlier commit to measure against."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return info
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    info["model_name"] = fields.get("Model name", "").strip()
    flags = set(fields.get("Flags", "").split())
    info["simd"] = [f for f in ("avx512f", "avx512_bf16", "avx2", "fma") if f in flags]
    with contextlib.suppress(OSError, StopIteration, ValueError):
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        info["cpu_mhz"] = float(next(line for line in cpuinfo if line.startswith("cpu MHz")).split(":")[1])
    return info


@contextmanager
def checked_out(revision: str | None) -> Iterator[Path | None]:
    """A temporary git worktree of ``revision`` (None: nothing), removed afterwards: run its package with
    ``PYTHONPATH`` pointing there."""
    if revision is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="benchmark-baseline-") as parent:
        path = Path(parent) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(path), revision], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


def run_child(label: str, command: list[str], env: dict[str, str], package_root: Path) -> dict:
    """Run one measuring process with ``package_root``'s package (this tree or a baseline's) and legacy Keras, and
    return the JSON document it prints last; a failure stops the benchmark with the child's error."""
    env = {**env, "PYTHONPATH": str(package_root), "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, env=env, cwd=package_root, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{label} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def publish(script: str, report: dict[str, Any], output: str | None) -> None:
    """Print a benchmark's JSON document, headed by the command that made it and the machine, and write it to
    ``output`` too."""
    text = json.dumps({"command": " ".join([script, *sys.argv[1:]]), "machine": machine(), **report}, indent=2)
    if output:
        Path(output).write_text(text + "\n")
    print(text)
