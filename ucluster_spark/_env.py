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

RUNTIME_ENV: dict[str, str] = {
    "TF_USE_LEGACY_KERAS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONUNBUFFERED": "1",
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
