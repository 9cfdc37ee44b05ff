"""Driver side: what a failed training launch tells the user: the ranks that were lost, a divergence's one line,
what the ranks' exit codes mean and where to resume from."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ucluster_spark import checkpoint, errors, store
from ucluster_spark.driver.launchers.supervision import failure_reports


def lost_ranks(horovod_error: str, layout: store.RunLayout) -> list[str]:
    """The ranks horovod reports without an exit code (``Process name: 1 / Exit code: None``: the process vanished
    with its executor), named with the host and pid each recorded when it started."""
    named = []
    for rank in re.findall(r"Process name: (\S+)\s+Exit code: None", horovod_error):
        try:
            where = json.loads(layout.placement(rank).read_text())
            named.append(f"rank {rank} on {where['host']} (pid {where['pid']})")
        except (OSError, ValueError, KeyError):
            named.append(f"rank {rank} (it never reported where it ran)")
    return named


def divergence_reported(run_dir: Path) -> str:
    """The message of a rank that stopped because training diverged (every rank stops at the same step), or ""."""
    for report in failure_reports(store.RunLayout(run_dir).failures):
        if report.get("kind") == errors.TrainingDiverged.__name__:
            return str(report.get("details") or report.get("error", "")).strip()
    return ""


def resume_hint(run_dir: Path) -> str:
    last = checkpoint.latest(run_dir)
    if last is None:
        return "no checkpoint was written: train again with a corrected setting"
    return (
        f"the last good checkpoint is {last.name}: continue from it with a corrected setting "
        f"(--resume {run_dir} section.key=value), or train again"
    )


def failure_hint(err: Exception, run_dir: Path) -> str:
    text = str(err)
    hints = []
    for code, meaning in errors.RANK_EXIT_MEANINGS.items():
        if f"Exit code: {code}\n" in text + "\n":
            hints.append(f"exit code {code}: {meaning}")
    hints += [f"{lost} was lost: its process ended without an exit code, as when the executor, container or host "
              "running it dies" for lost in lost_ranks(text, store.RunLayout(run_dir))]  # fmt: skip
    last = checkpoint.latest(run_dir)
    hints.append(
        f"continue from checkpoint {last.name} with --resume {run_dir}" if last else "no checkpoint was written yet"
    )
    return "; ".join(hints)
