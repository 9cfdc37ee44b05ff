"""Process environment the stack needs, set before TensorFlow is first imported.

TF 2.18's ``tf.keras`` is Keras 3, which horovod 0.28.1 cannot drive; ``TF_USE_LEGACY_KERAS=1`` switches it to
tf_keras (Keras 2). The variable only works if set before the first ``import tensorflow`` of a process, so the
package's ``__init__`` imports this module: any ``import ucluster_spark.<module>`` sets it first, in the driver
and inside executors (which unpickle functions of this package, importing it).
"""

from __future__ import annotations

import os
import sys
import warnings

MALLOC_ENV: dict[str, str] = {
    "MALLOC_MMAP_THRESHOLD_": "4294967296",
    "MALLOC_TRIM_THRESHOLD_": "4294967296",
}
"""glibc malloc settings for every process that runs the model. Tensors of a training step exceed glibc's largest
dynamic mmap threshold (32 MB; e.g. GAPLayer 2's edge tensors, 128 x 100 x 10 x 128 floats), so by default every
step maps fresh pages and unmaps them again, and the kernel spends ~40 % of a rank's CPU in page faults. With both
thresholds raised, freed blocks stay in the heap and are reused (measured: docs/benchmarks/scaling.md). They act
only when a process starts, so they are set for the processes this one launches (ranks, executors); the Makefile
sets them for its own."""


def malloc_env(enabled: bool) -> dict[str, str | None]:
    """The malloc variables for a process about to start: their values, or None (unset) with ``enabled`` off."""
    return {key: value if enabled else None for key, value in MALLOC_ENV.items()}


def with_changes(env: dict[str, str], changes: dict[str, str | None], keep_set: bool) -> dict[str, str]:
    """A copy of ``env`` with ``changes`` applied: None unsets a variable; a value sets it, or with ``keep_set`` only
    fills it in where ``env`` has none (a user's explicit choice wins)."""
    merged = dict(env)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        elif keep_set:
            merged.setdefault(key, value)
        else:
            merged[key] = value
    return merged


ARENA_ENV: dict[str, str] = {"MALLOC_ARENA_MAX": "2"}
"""glibc's cap on malloc arenas, for every process of the stack and above all its JVMs. By default glibc gives each
new thread its own arena, up to 8 per core, and memory freed in one is not reused by another: the JVM that reads
the parquet (Spark's executor; in local mode the driver) grew by ~0.5 GB that its own accounting did not see over
a 3M-jet evaluation, and stayed flat at ~1.1 GB with 2 arenas, at the same speed (docs/benchmarks/large-datasets.md).
Executors get it through ``spark.executorEnv``; a driver JVM started by spark-submit only from the shell that
starts it (the Makefile and the benchmarks set it)."""

RUNTIME_ENV: dict[str, str] = {
    "TF_USE_LEGACY_KERAS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "GLOG_minloglevel": "2",  # the same for TensorFlow's C++ code that logs through absl (gRPC server start-up)
    "PYTHONUNBUFFERED": "1",
    **MALLOC_ENV,
    **ARENA_ENV,
}


def apply() -> None:
    """Set the runtime variables (without overriding explicit user choices) and the Spark python."""
    for key, value in RUNTIME_ENV.items():
        os.environ.setdefault(key, value)
    # Executors must run this interpreter, not the system one (which lacks pyarrow, TF, ...).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # petastorm 0.13 calls pyarrow 10's legacy dataset API: harmless FutureWarnings on every read, per worker.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"petastorm")
    warnings.filterwarnings("ignore", message="schema_fields behavior has changed", category=UserWarning)
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise RuntimeError("TensorFlow was imported before ucluster_spark set TF_USE_LEGACY_KERAS=1")


apply()
