"""The barrier launcher (``run.launcher=barrier``): the ranks as one Spark barrier stage, their collectives from
``tf.distribute.MultiWorkerMirroredStrategy``. Needs neither horovod nor petastorm (in an environment without
petastorm these tests read with the arrow reader)."""

import json

import numpy as np
import pytest

from tests.conftest import HAS_PETASTORM, ROOT, STACK, TINY, TWO_RANKS, needs_horovod, submit
from ucluster_spark import config, errors, store

pytestmark = [pytest.mark.slow, pytest.mark.portable]
BARRIER = ["run.launcher=barrier", STACK[1]]  # the reader of the shared barrier run (two_rank_run)


@needs_horovod
def test_barrier_and_horovod_launchers_agree(two_rank_run):
    """Same data, seed and reader: the same k-means start, and the same accuracy within 2 points (the all-reduce
    sums in another order, so weights agree to rounding, not bit for bit)."""
    runs = {launcher: two_rank_run(launcher) for launcher in ("horovod", "barrier")}
    starts = {}
    for launcher, (run_dir, _) in runs.items():
        history = json.loads(store.RunLayout(run_dir).history.read_text())
        starts[launcher] = (history[1]["kmeans_start_test_accuracy"], history[1]["val_clustering_accuracy"])
    assert starts["barrier"] == starts["horovod"]
    horovod, barrier = (runs[k][1].metrics for k in ("horovod", "barrier"))
    np.testing.assert_allclose(barrier["centroids"], horovod["centroids"], atol=1e-3)
    assert abs(barrier["clustering_accuracy"] - horovod["clustering_accuracy"]) <= 0.02


def test_a_killed_barrier_rank_fails_the_job_and_the_run_resumes(synthetic_dataset, two_rank_run, tmp_path):
    """Through spark-submit, with the settings of the shared barrier run, which the resumed run must equal number for
    number."""
    from ucluster_spark.executor.rank.environment import FAULT_ENV

    root, _, _ = synthetic_dataset
    whole, _ = two_rank_run("barrier")
    args = ["--config", str(ROOT / "conf/local.yaml"), "--data", str(root), *TINY, *TWO_RANKS, *BARRIER]
    run_dir = tmp_path / "killed"
    # Rank 1 SIGKILLs itself at the second step of epoch 2: past the first step's allreduce, so rank 0 (which saves
    # before it) has written the epoch-1 checkpoint (at the first step that raced with the save on a loaded machine).
    failed = submit(*args, "--output", str(run_dir), cwd=tmp_path, extra_env={FAULT_ENV: "kill:1:1:1"}, timeout=300)
    assert failed.returncode == errors.EXIT_TRAINING_FAILED, failed.stderr[-4000:]
    assert "rank 1 (executor driver" in failed.stderr and "was killed by SIGKILL" in failed.stderr
    assert f"continue from checkpoint epoch-0001 with --resume {run_dir}" in failed.stderr
    assert len([line for line in failed.stderr.splitlines() if line.startswith("error: ")]) == 1  # one, no retries
    assert not store.RunLayout(run_dir).metrics.exists()

    resumed = submit("--resume", str(run_dir), cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    history, reference = (json.loads(store.RunLayout(d).history.read_text()) for d in (run_dir, whole))
    for key in ("loss", "focal_loss", "clustering_loss_per_jet", "global_step", "val_clustering_accuracy"):
        assert [h.get(key) for h in history] == [h.get(key) for h in reference], key


def test_without_horovod_the_default_launcher_is_refused_with_the_alternative(spark, synthetic_dataset, tmp_path):
    from tests.conftest import HAS_HOROVOD
    from ucluster_spark.driver.launcher import check_stack

    cfg = config.load(ROOT / "conf/local.yaml", ["run.launcher=horovod", "data.reader=petastorm"])
    if HAS_HOROVOD and HAS_PETASTORM:
        check_stack(cfg)  # nothing to refuse here
    else:
        with pytest.raises(errors.ConfigError, match=r"needs (horovod|petastorm), which is not installed.*use "):
            check_stack(cfg)
