"""The barrier launcher (``run.launcher=barrier``): the ranks as one Spark barrier stage, their collectives from
``tf.distribute.MultiWorkerMirroredStrategy``. Needs neither horovod nor petastorm (in an environment without
petastorm these tests read with the arrow reader)."""

import json

import numpy as np
import pytest

from tests.conftest import HAS_PETASTORM, ROOT, TINY, needs_horovod, submit
from ucluster_spark import config, errors, store

pytestmark = [pytest.mark.slow, pytest.mark.portable]
READER = f"data.reader={'petastorm' if HAS_PETASTORM else 'arrow'}"
BARRIER = ["run.launcher=barrier", READER]


def _train(spark, root, run_dir, *overrides):
    from ucluster_spark.driver.launcher import train

    return train(spark, config.load(ROOT / "conf/local.yaml", [f"data.path={root}", f"run.output={run_dir}", *TINY,
                                                              *overrides]))  # fmt: skip


def test_barrier_ranks_end_with_identical_weights_and_centroids(spark, synthetic_dataset, tmp_path):
    root, info, _ = synthetic_dataset
    # A k-means sample smaller than the training split: each rank keeps its part of it, only the sample is gathered.
    result = _train(spark, root, tmp_path / "run", *BARRIER, "train.kmeans_max_jets=100")
    first, second = result.rank_results
    assert (first["rank"], second["rank"]) == (0, 1)
    assert first["weights_digest"] == second["weights_digest"]  # averaged gradients, broadcast start: bit for bit
    assert first["centroids"] == second["centroids"]
    assert first["metrics"] == second["metrics"]
    assert result.metrics["n_jets"] == info.n_jets("test") and result.metrics["num_proc"] == 2
    history = json.loads(store.RunLayout(tmp_path / "run").history.read_text())
    for record in history:  # every training jet once per epoch, split over the two ranks
        assert record["jets_per_second"] * record["seconds"] == pytest.approx(info.n_jets("train"))
    log = store.RunLayout(tmp_path / "run").train_log.read_text()
    assert "2 rank(s) (tf.distribute)" in log and "k-means start from 100 training embeddings: cluster sizes " in log


@needs_horovod
def test_barrier_and_horovod_launchers_agree(spark, synthetic_dataset, tmp_path):
    """Same data, seed and reader: the same k-means start, and the same accuracy within 2 points (the all-reduce
    sums in another order, so weights agree to rounding, not bit for bit)."""
    root, _, _ = synthetic_dataset
    runs = {launcher: _train(spark, root, tmp_path / launcher, f"run.launcher={launcher}", READER, "train.epochs=4",
                             "train.pretrain_epochs=2") for launcher in ("horovod", "barrier")}  # fmt: skip
    starts = {}
    for launcher in runs:
        history = json.loads(store.RunLayout(tmp_path / launcher).history.read_text())
        starts[launcher] = (history[1]["kmeans_start_test_accuracy"], history[1]["val_clustering_accuracy"])
    assert starts["barrier"] == starts["horovod"]
    horovod, barrier = (runs[k].metrics for k in ("horovod", "barrier"))
    np.testing.assert_allclose(barrier["centroids"], horovod["centroids"], atol=1e-3)
    assert abs(barrier["clustering_accuracy"] - horovod["clustering_accuracy"]) <= 0.02


def test_a_killed_barrier_rank_fails_the_job_and_the_run_resumes(synthetic_dataset, tmp_path):
    from ucluster_spark.executor.rank.environment import FAULT_ENV

    root, _, _ = synthetic_dataset
    args = ["--config", str(ROOT / "conf/local.yaml"), "--data", str(root), *TINY, *BARRIER]
    reference = submit(*args, "--output", str(tmp_path / "whole"), cwd=tmp_path, timeout=300)
    assert reference.returncode == 0, reference.stderr[-4000:]

    run_dir = tmp_path / "killed"
    # Rank 1 SIGKILLs itself at the first step of epoch 2, after the epoch-1 checkpoint.
    failed = submit(*args, "--output", str(run_dir), cwd=tmp_path, extra_env={FAULT_ENV: "kill:1:1:0"}, timeout=300)
    assert failed.returncode == errors.EXIT_TRAINING_FAILED, failed.stderr[-4000:]
    assert "rank 1 (executor driver" in failed.stderr and "was killed by SIGKILL" in failed.stderr
    assert f"continue from checkpoint epoch-0001 with --resume {run_dir}" in failed.stderr
    assert len([line for line in failed.stderr.splitlines() if line.startswith("error: ")]) == 1  # one, no retries
    assert not store.RunLayout(run_dir).metrics.exists()

    resumed = submit("--resume", str(run_dir), cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    history, whole = (json.loads(store.RunLayout(d).history.read_text()) for d in (run_dir, tmp_path / "whole"))
    for key in ("loss", "focal_loss", "clustering_loss_per_jet", "global_step", "val_clustering_accuracy"):
        assert [h.get(key) for h in history] == [h.get(key) for h in whole], key


def test_without_horovod_the_default_launcher_is_refused_with_the_alternative(spark, synthetic_dataset, tmp_path):
    from tests.conftest import HAS_HOROVOD
    from ucluster_spark.driver.launcher import check_stack

    cfg = config.load(ROOT / "conf/local.yaml", ["run.launcher=horovod", "data.reader=petastorm"])
    if HAS_HOROVOD and HAS_PETASTORM:
        check_stack(cfg)  # nothing to refuse here
    else:
        with pytest.raises(errors.ConfigError, match=r"needs (horovod|petastorm), which is not installed.*use "):
            check_stack(cfg)
