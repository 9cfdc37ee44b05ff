"""A finished run's model in a real MLflow tracking server (SQLite store, served artifacts): logged with a signature
and an input example, registered, loaded by ``models:/`` URI in a process without this package, scored through
``spark_udf`` and by ``evaluate --model models:/...``, each with the numbers of the evaluate job on the run folder."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT, STACK
from ucluster_spark import schema
from ucluster_spark.config import EvaluateConfig

pytestmark = [pytest.mark.slow, pytest.mark.portable]
NAME = "ucluster-test"

OUTSIDE = """
import sys
import numpy as np, pandas as pd, pyarrow.parquet as pq, mlflow
uri, split, out = sys.argv[1:]
model = mlflow.pyfunc.load_model(uri)
jets = pq.read_table(split, columns=["jet_id", "constituents"]).to_pandas()
scored = model.predict(jets[["constituents"]])
assert not [m for m in sys.modules if m.startswith("ucluster_spark")]
scored.insert(0, "jet_id", jets["jet_id"])
scored.to_parquet(out)
"""


def by_jet(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(schema.JET_ID).reset_index(drop=True)


def assert_same_assignments(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    got, expected = by_jet(got), by_jet(expected)
    assert got[schema.JET_ID].tolist() == expected[schema.JET_ID].tolist()
    np.testing.assert_array_equal(got[schema.CLUSTER].to_numpy(), expected[schema.CLUSTER].to_numpy())
    for column in (schema.SOFT_ASSIGNMENT, schema.EMBEDDING, schema.DISTANCES):
        np.testing.assert_allclose(np.stack(got[column]), np.stack(expected[column]), rtol=1e-5, atol=1e-6)


def test_a_runs_model_is_registered_and_scores_jets_as_evaluate_does(
    spark, two_rank_run, synthetic_dataset, tracking_server, tmp_path, monkeypatch
):
    import mlflow

    from ucluster_spark.driver import tracking
    from ucluster_spark.driver.evaluate import evaluate
    from ucluster_spark.errors import InputMissing

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "models")
    run_dir, _ = two_rank_run(STACK[0].split("=")[1])
    root = synthetic_dataset[0]
    command = [sys.executable, str(ROOT / "jobs/export.py"), str(run_dir), str(tmp_path / "saved"), "--mlflow",
               "--register-as", NAME]  # fmt: skip
    exported = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert exported.returncode == 0, exported.stderr[-3000:]
    logged = json.loads(exported.stdout.strip().splitlines()[-1])["mlflow"]["mlflow_run_id"]
    assert (tmp_path / "saved/saved_model.pb").is_file()  # the export beside it is the one logged, made once

    version = mlflow.tracking.MlflowClient().get_model_version(NAME, "1")
    assert version.run_id == logged and version.status == "READY"
    info = mlflow.models.get_model_info(f"models:/{NAME}/1")
    assert info.signature.inputs.input_names() == [schema.CONSTITUENTS]
    assert info.signature.outputs.input_names() == [schema.CLUSTER, schema.SOFT_ASSIGNMENT, schema.EMBEDDING,
                                                    schema.DISTANCES]  # fmt: skip
    assert info.saved_input_example_info is not None and info.metadata["n_clusters"] == 3
    with tracking.downloaded_model(f"runs:/{logged}/model") as inside:  # the run inside, as evaluate --model reads it
        assert (inside / "model/weights.h5").read_bytes() == (run_dir / "model/weights.h5").read_bytes()
        assert json.loads((inside / "metrics.json").read_text())["centroids"] == json.loads(
            (run_dir / "metrics.json").read_text())["centroids"]  # fmt: skip
    assert not inside.exists()

    # evaluate --model models:/NAME/1: the run folder's numbers, jet by jet
    settings = EvaluateConfig(splits=["test"])
    from_folder = evaluate(spark, run_dir, root, tmp_path / "folder", settings)
    from_registry = evaluate(spark, f"models:/{NAME}/1", root, tmp_path / "registry", settings)
    assert from_registry["model"] == f"models:/{NAME}/1"
    for key in ("clustering_accuracy", "nmi", "ari", "cluster_sizes", "confusion_matrix"):
        assert from_registry[key] == from_folder[key], key
    expected = pd.read_parquet(tmp_path / "folder/assignments")
    assert_same_assignments(pd.read_parquet(tmp_path / "registry/assignments"), expected)

    # mlflow.pyfunc.load_model in a fresh process that cannot import this package
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    outside = subprocess.run([sys.executable, "-c", OUTSIDE, f"models:/{NAME}/1", str(root / "test"),
                              str(tmp_path / "pyfunc.parquet")], capture_output=True, text=True, timeout=300,
                             env=env, cwd=tmp_path)  # fmt: skip
    assert outside.returncode == 0, outside.stderr[-3000:]
    assert_same_assignments(pd.read_parquet(tmp_path / "pyfunc.parquet"), expected)

    # spark_udf over the dataset's own column, in this local session
    udf = mlflow.pyfunc.spark_udf(spark, f"models:/{NAME}/1", env_manager="local")
    scored = spark.read.parquet(str(root / "test")).select(schema.JET_ID, udf(schema.CONSTITUENTS).alias("out"))
    assert_same_assignments(scored.select(schema.JET_ID, "out.*").toPandas(), expected)

    with pytest.raises(InputMissing, match=f"--model models:/{NAME}/7: cannot fetch it from MLflow"):
        evaluate(spark, f"models:/{NAME}/7", root, tmp_path / "missing", settings)
    assert not (tmp_path / "missing").exists()
