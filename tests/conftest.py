"""Shared fixtures: a real local[2] SparkSession and small datasets made here (no downloads, no mocks)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ucluster_spark import config, schema  # the package sets its runtime environment before TensorFlow
from ucluster_spark.data.dataset import write_dataset

PROCESS_FIXTURES = {
    "spark", "synthetic_dataset", "finished_run", "two_rank_run", "tracking_server", "standalone_cluster",
}  # fmt: skip
"""Fixtures that start a Spark application, a training launch or a server: a test using one is ``slow`` whatever
its own marks say, so ``make test-fast`` (``-m "not slow"``) starts no Spark and launches no rank."""


def pytest_collection_modifyitems(items):
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def package_log(caplog):
    """Records of the package's loggers (which do not propagate to the root logger once a job configured them)."""
    import logging

    logger = logging.getLogger("ucluster_spark")
    logger.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.DEBUG)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(previous)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from ucluster_spark.driver.session import get_session

    warehouse = tmp_path_factory.mktemp("warehouse")  # the catalog's managed tables: not in the checkout
    session = get_session("ucluster-tests", {"spark.sql.warehouse.dir": str(warehouse)})
    yield session
    session.stop()


def synthetic_jets(n_per_class: int, classes=("w", "z", "t"), max_constituents=100, n_features=8, seed=0):
    """Hand-made jets in the dataset schema: class k has mass ~ (k + 1) x 60 GeV and 10 + 5k particles."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, name in enumerate(classes):
        for i in range(n_per_class):
            n = 10 + 5 * label + int(rng.integers(0, 5))
            x = np.zeros((max_constituents, n_features), np.float32)
            x[:n] = rng.normal(label, 0.3, size=(n, n_features))
            rows.append(
                {
                    schema.JET_ID: f"{name}-{i}",
                    schema.LABEL: label,
                    schema.LABEL_NAME: name,
                    schema.PT: 1000.0,
                    schema.ETA: 0.0,
                    schema.PHI: 0.0,
                    schema.MASS: float((label + 1) * 60 + rng.normal(0, 5)),
                    schema.SD_MASS: float((label + 1) * 55),
                    schema.TAU21: 0.3 + 0.1 * label,
                    schema.TAU32: 0.8 - 0.1 * label,
                    schema.N_CONSTITUENTS: n,
                    schema.CONSTITUENTS: x.ravel(),
                }
            )
    return pd.DataFrame(rows)[list(schema.COLUMNS)]


@pytest.fixture(scope="session")
def synthetic_dataset(spark, tmp_path_factory):
    """A small dataset directory written by the project's own writer (4 files per split)."""
    root = tmp_path_factory.mktemp("synthetic") / "dataset"
    cfg = config.load(None, ["data.files_per_split=4"])
    frame = synthetic_jets(80)
    df = spark.createDataFrame(frame, schema=schema.spark_schema())
    info = write_dataset(spark, df, root, cfg.data, {"generator": "tests.synthetic_jets"})
    return root, info, frame


ROOT = Path(__file__).resolve().parents[1]
HAS_HOROVOD = importlib.util.find_spec("horovod") is not None
HAS_PETASTORM = importlib.util.find_spec("petastorm") is not None
STACK = [
    f"run.launcher={'horovod' if HAS_HOROVOD else 'barrier'}",
    f"data.reader={'petastorm' if HAS_PETASTORM else 'arrow'}",
]
"""The launcher and reader this environment has: the default ones, or (current-releases environment) the others."""
needs_horovod = pytest.mark.skipif(not HAS_HOROVOD, reason="horovod is not installed in this environment")
needs_petastorm = pytest.mark.skipif(not HAS_PETASTORM, reason="petastorm is not installed in this environment")
READER_PARAMS = [pytest.param("petastorm", marks=needs_petastorm), pytest.param("arrow", marks=pytest.mark.portable)]
"""Both readers for a test; the arrow one also runs in the current-releases environment."""
SPARK_SUBMIT = Path(sys.executable).with_name("spark-submit")
TINY = [
    "data.jets_per_class=40",
    "data.tasks_per_class=1",
    "train.epochs=2",
    "train.pretrain_epochs=1",
    "train.batch_size=16",
    "model.mlp1=[16,32]",
    "model.gap2_features=32",
    "model.mlp2=[32,32]",
]


def submit(*args, job="train", cwd, extra_env=None, timeout=900, master="local[2]"):
    """``spark-submit jobs/<job>.py ARGS`` in a fresh process, as a user runs it."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    return subprocess.run(
        [str(SPARK_SUBMIT), "--master", master, str(ROOT / f"jobs/{job}.py"), *args],
        cwd=cwd,
        env={**env, **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,  # a hang fails the test
    )


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """A tiny run of the main job (Pythia data generated in the job, 2 ranks): (work dir, run dir, process)."""
    work = tmp_path_factory.mktemp("e2e")
    run_dir = work / "run"
    result = submit(
        "--config",
        str(ROOT / "conf/local.yaml"),
        "--output",
        str(run_dir),
        f"data.generated_root={work / 'generated'}",
        *TINY,
        cwd=work,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return work, run_dir, result


TWO_RANKS = ["train.epochs=4", "train.pretrain_epochs=2", "train.kmeans_max_jets=100", "run.bind_ranks_to_cores=true"]
"""The shared 2-rank runs' settings beyond ``TINY``: a clustering phase of 2 epochs, a k-means sample smaller than the
training split (each rank keeps its part of it, only the sample is gathered) and each rank bound to its cores."""


@pytest.fixture(scope="session")
def two_rank_run(spark, synthetic_dataset, tmp_path_factory):
    """``two_rank_run(launcher)``: (run dir, TrainingResult) of 2 ranks on the synthetic dataset with ``TWO_RANKS``,
    trained in-process by the driver once per launcher and session; the tests that check those runs from different
    sides (identical ranks, the launchers agree, a killed rank resumes to the same numbers) share them."""
    from ucluster_spark.driver.launcher import train

    runs = {}

    def run(launcher: str):
        if launcher not in runs:
            run_dir = tmp_path_factory.mktemp(f"two-ranks-{launcher}") / "run"
            overrides = [f"data.path={synthetic_dataset[0]}", f"run.output={run_dir}", *TINY, *TWO_RANKS,
                         f"run.launcher={launcher}", STACK[1]]  # fmt: skip
            runs[launcher] = run_dir, train(spark, config.load(ROOT / "conf/local.yaml", overrides))
        return runs[launcher]

    return run


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory):
    """The URL of a real MLflow tracking server (``tests/tracking_server.py``), started on first use and stopped at
    the end of the session."""
    pytest.importorskip("mlflow.server", reason="the full mlflow (test extra) runs the tracking server")
    from tests.tracking_server import TrackingServer

    server = TrackingServer(tmp_path_factory.mktemp("mlflow-server")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    """A Spark standalone master and two one-core workers on 127.0.0.1 (``tests/standalone.py``), stopped after
    the module's tests: jobs submitted to it run in two executor processes, as on a real cluster."""
    from tests.standalone import StandaloneCluster

    cluster = StandaloneCluster(tmp_path_factory.mktemp("cluster"), workers=2, cores_per_worker=1)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
