"""A finished run exported as a TensorFlow SavedModel (``jobs/export.py``), loaded in a process that imports
TensorFlow and pyarrow only, and as ONNX in onnxruntime where tf2onnx is installed: both assign the test split's jets
as the evaluate job's assigner does."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, STACK
from ucluster_spark import errors

pytestmark = [pytest.mark.slow, pytest.mark.portable]
HAS_TF2ONNX = importlib.util.find_spec("tf2onnx") is not None

OUTSIDE = """
import sys
import numpy as np, pyarrow.parquet as pq, tensorflow as tf
saved, split, out = sys.argv[1:]
serve = tf.saved_model.load(saved).signatures["serving_default"]
shape = serve.structured_input_signature[1]["constituents"].shape[1:]
table = pq.read_table(split, columns=["jet_id", "constituents"])
x = np.array(table.column("constituents").to_pylist(), np.float32).reshape(-1, *shape)
result = {k: v.numpy() for k, v in serve(constituents=tf.constant(x)).items()}
assert not [m for m in sys.modules if m.startswith("ucluster_spark")]
np.savez(out, x=x, **result)
"""


def _export(*args):
    return subprocess.run([sys.executable, str(ROOT / "jobs/export.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_the_saved_model_and_the_onnx_model_assign_as_evaluate_does_without_the_package(
    two_rank_run, synthetic_dataset, tmp_path
):
    from ucluster_spark.executor.inference import Assigner

    run_dir, _ = two_rank_run(STACK[0].split("=")[1])
    exported = _export(run_dir, tmp_path / "saved", *(["--onnx"] if HAS_TF2ONNX else []))
    assert exported.returncode == 0, exported.stderr[-3000:]
    described = json.loads(exported.stdout.strip().splitlines()[-1])
    assert described["input"] == [None, 100, 8] and described["signature"] == "serving_default"

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    outside = subprocess.run([sys.executable, "-c", OUTSIDE, str(tmp_path / "saved"),
                              str(synthetic_dataset[0] / "test"), str(tmp_path / "out.npz")],
                             capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)  # fmt: skip
    assert outside.returncode == 0, outside.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    z, distances, soft = Assigner(run_dir)(got["x"], described["alpha"])
    np.testing.assert_array_equal(got["cluster"], np.argmin(distances, axis=1))
    np.testing.assert_allclose(got["soft_assignment"], soft, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["embedding"], z, rtol=1e-5, atol=1e-6)
    assert len(got["cluster"]) == synthetic_dataset[1].n_jets("test") and got["distances"].shape[1] == 3

    if HAS_TF2ONNX:  # the same function in onnxruntime
        import onnxruntime

        session = onnxruntime.InferenceSession(described["onnx"], providers=["CPUExecutionProvider"])
        onnx = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"constituents": got["x"]}),
                        strict=True))  # fmt: skip
        np.testing.assert_array_equal(onnx["cluster"], got["cluster"])
        np.testing.assert_allclose(onnx["soft_assignment"], soft, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(onnx["embedding"], z, rtol=1e-5, atol=1e-6)
    else:  # refused, naming what is missing, before anything is written
        refused = _export(run_dir, tmp_path / "onnx", "--onnx")
        assert refused.returncode == errors.EXIT_BAD_INPUT and "--onnx needs the tf2onnx package" in refused.stderr
        assert not (tmp_path / "onnx").exists()

    again = _export(run_dir, tmp_path / "saved")  # an export is replaced only when asked
    assert again.returncode == errors.EXIT_BAD_INPUT and "--overwrite" in again.stderr
    untracked = subprocess.run([sys.executable, str(ROOT / "jobs/export.py"), str(run_dir), "--mlflow"],
                               capture_output=True, text=True, timeout=300,
                               env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")})  # fmt: skip
    assert untracked.returncode == errors.EXIT_BAD_INPUT and "MLFLOW_TRACKING_URI" in untracked.stderr
    unfinished = _export(tmp_path, tmp_path / "other")
    assert unfinished.returncode == errors.EXIT_BAD_INPUT and "not a finished training run" in unfinished.stderr
    assert not (tmp_path / "other").exists()
