"""The MLflow pyfunc model of a trained run, as MLflow's "model from code": ``mlflow_model.log_model`` stores this
file inside every logged model, and MLflow runs it wherever the model is loaded (``mlflow.pyfunc.load_model``,
``spark_udf``'s executors, a serving endpoint). So it imports numpy, pandas, TensorFlow and MLflow only, never this
package: the model serves where ucluster-spark is not installed.

Input: a DataFrame with a ``constituents`` column, each row one jet's flat float array as the dataset stores it
(particles x features). Output: ``cluster``, ``soft_assignment``, ``embedding`` and ``distances`` per jet, from the
run's SavedModel (``export.ServingModel``): the evaluate job's numbers.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

SAVED_MODEL = "saved_model"
"""The artifact holding the SavedModel (``mlflow_model.SAVED_MODEL``: this file cannot import it)."""
OUTPUTS = ("cluster", "soft_assignment", "embedding", "distances")
"""The SavedModel's outputs (``schema.ASSIGNMENT_COLUMNS``' names), in the signature's order."""


class UClusterModel(mlflow.pyfunc.PythonModel):
    """A batch of jets' constituents -> their cluster, soft assignment, embedding and squared centroid distances."""

    def load_context(self, context) -> None:
        import tensorflow as tf

        self._serve = tf.saved_model.load(context.artifacts[SAVED_MODEL]).signatures["serving_default"]
        self._shape = tuple(self._serve.structured_input_signature[1]["constituents"].shape[1:])
        self._batch_size = int((context.model_config or {}).get("batch_size", 1024))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        import tensorflow as tf

        jets = self._constituents(model_input)
        if not len(jets):
            return pd.DataFrame({key: [] for key in OUTPUTS})
        parts = [self._serve(constituents=tf.constant(jets[i : i + self._batch_size]))
                 for i in range(0, len(jets), self._batch_size)]  # fmt: skip
        out = {key: np.concatenate([p[key].numpy() for p in parts]) for key in OUTPUTS}
        return pd.DataFrame(
            {
                "cluster": out["cluster"].astype(np.int32),
                "soft_assignment": list(out["soft_assignment"]),
                "embedding": list(out["embedding"]),
                "distances": list(out["distances"]),
            }
        )

    def _constituents(self, model_input: pd.DataFrame) -> np.ndarray:
        """(jets, particles, features) float32; a jet of the wrong length is refused by its row."""
        if "constituents" not in model_input:
            raise ValueError(f"input has no 'constituents' column (columns: {list(model_input.columns)})")
        expected = int(np.prod(self._shape))
        rows = []
        for row, values in enumerate(model_input["constituents"]):
            flat = np.asarray(values, np.float32).reshape(-1)
            if flat.size != expected:
                raise ValueError(
                    f"row {row}: 'constituents' holds {flat.size} values, the model expects {self._shape[0]} "
                    f"particles x {self._shape[1]} features = {expected}"
                )
            rows.append(flat)
        return np.stack(rows).reshape(-1, *self._shape) if rows else np.zeros((0, *self._shape), np.float32)


mlflow.models.set_model(UClusterModel())
