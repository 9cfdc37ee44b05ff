"""A finished run's model logged to MLflow (``jobs/export.py --mlflow``; the train job and the pipeline start that
in a child process, so their drivers never import TensorFlow).

The logged model is a pyfunc (``pyfunc_model.py``, stored inside it as code) around the run's SavedModel, with a
signature whose input is the dataset's ``constituents`` column and whose outputs are the evaluate job's columns, an
input example of real jets, and the run itself (``artifacts/run``: config, weights, centroids, history) so that
``evaluate --model models:/NAME/VERSION`` reproduces the run folder's numbers exactly.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ucluster_spark import store
from ucluster_spark.config import Config
from ucluster_spark.executor.export import export_saved_model
from ucluster_spark.schema import CLUSTER, CONSTITUENTS, DISTANCES, EMBEDDING, SOFT_ASSIGNMENT, feature_names

log = logging.getLogger(__name__)

MODEL_NAME = "model"
"""The model's name inside its MLflow run (``runs:/<run id>/model``)."""
SAVED_MODEL = "saved_model"
RUN = "run"
"""The artifacts inside the logged model: the SavedModel the pyfunc serves, and the run's own files."""
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
EXAMPLE_JETS = 2


def signature():
    """Input: the dataset's flat ``constituents`` array; outputs: the evaluate job's columns (``spark_udf`` returns
    them as one struct)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    floats = Array(DataType.float)
    # Input as doubles: float32 (parquet, Spark) widens safely, JSON (a serving endpoint) arrives as float64. No
    # length in MLflow's Array: the pyfunc refuses a jet of the wrong size by its row.
    return ModelSignature(
        inputs=Schema([ColSpec(Array(DataType.double), CONSTITUENTS)]),
        outputs=Schema(
            [
                ColSpec(DataType.integer, CLUSTER),
                ColSpec(floats, SOFT_ASSIGNMENT),
                ColSpec(floats, EMBEDDING),
                ColSpec(floats, DISTANCES),
            ]
        ),
    )


def input_example(dataset: Path | None, n_values: int):
    """The first jets of the run's dataset (its test split, else any split), or one padding-only jet when the
    dataset is no longer where the run found it or the model was trained elsewhere (imported)."""
    import pandas as pd
    import pyarrow.parquet as pq

    for split in ("test", "val", "train"):
        files = sorted((dataset / split).glob("*.parquet")) if dataset else []
        if files:
            batch = next(pq.ParquetFile(files[0]).iter_batches(batch_size=EXAMPLE_JETS, columns=[CONSTITUENTS]))
            jets = [np.asarray(v, np.float32) for v in batch.column(CONSTITUENTS).to_pylist()]
            return pd.DataFrame({CONSTITUENTS: jets})
    log.info("%s: no dataset files; the input example is one padding-only jet", dataset)
    return pd.DataFrame({CONSTITUENTS: [np.zeros(n_values, np.float32)]})


def copy_run(run_dir: Path, target: Path) -> None:
    """What ``evaluate`` reads of a run (config, weights, metrics with the centroids, history)."""
    source, copy = store.RunLayout(run_dir), store.RunLayout(target)
    for path in (source.weights, source.model_config, source.metrics, source.history, source.config):
        if path.is_file():
            destination = copy.root / path.relative_to(source.root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)


def pip_requirements() -> list[str]:
    """What loading the model needs: TensorFlow (the distribution that runs everywhere), numpy, pandas."""
    import pandas as pd
    import tensorflow as tf

    return [f"tensorflow=={tf.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]


def log_model(
    run_dir: str | Path, register_as: str = "", mlflow_run_id: str = "", exported: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Log (and with ``register_as`` register) the run's model, inside MLflow run ``mlflow_run_id`` or a new one.
    ``exported``: ``export_saved_model``'s description of the run's SavedModel when the caller has just written one."""
    import mlflow

    layout = store.RunLayout(run_dir)
    with tempfile.TemporaryDirectory(prefix="ucluster-mlflow-") as tmp:
        exported = exported or export_saved_model(layout.root, Path(tmp) / SAVED_MODEL)  # refuses an unfinished run
        copy_run(layout.root, Path(tmp) / RUN)
        cfg = Config.from_dict(store.read_json(layout.model_config), str(layout.model_config))
        dataset = store.trained_dataset(store.read_json(layout.metrics))
        n_values = cfg.data.max_constituents * len(feature_names(cfg.data.feature_set))
        if mlflow.active_run() is not None:
            opened = contextlib.nullcontext(mlflow.active_run())
        elif mlflow_run_id:
            opened = mlflow.start_run(run_id=mlflow_run_id)
        else:
            opened = mlflow.start_run(run_name=f"model {layout.root.name}")
        with opened as active:
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(PYFUNC_CODE),
                artifacts={SAVED_MODEL: exported["output"], RUN: str(Path(tmp) / RUN)},
                signature=signature(),
                input_example=input_example(dataset, n_values),
                pip_requirements=pip_requirements(),
                model_config={"batch_size": cfg.evaluate.batch_size},
                metadata={
                    "ucluster_run": layout.root.name,
                    "soft_assignment_alpha": exported["alpha"],
                    "n_clusters": cfg.model.n_clusters,
                    "classes": list(cfg.data.classes),
                },
                registered_model_name=register_as or None,
            )
            mlflow_run = active.info.run_id
    version = info.registered_model_version
    registered = f"models:/{register_as}/{version}" if register_as and version else None
    log.info("MLflow model of %s: %s%s", layout.root, info.model_uri, f" = {registered}" if registered else "")
    return {"mlflow_run_id": mlflow_run, "model_uri": info.model_uri, "registered_model": registered}
