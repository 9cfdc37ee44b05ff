"""Executor side: the process of one barrier-launcher rank (``python -m ucluster_spark.executor.rank.worker
ARGUMENTS RESULT``), started by its barrier task with ``TF_CONFIG`` set: trains, and writes its summary to RESULT.
A failure leaves its report in the run directory (``train_fn``) and a non-zero exit code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ucluster_spark import store
from ucluster_spark.executor.rank.entry import train_fn


def main(argv: list[str]) -> int:
    arguments, result = Path(argv[0]), Path(argv[1])
    payload = json.loads(arguments.read_text())
    store.atomic_write_json(result, train_fn(payload["cfg"], payload["plan"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
