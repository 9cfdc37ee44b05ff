"""Datasets larger than memory or than an epoch should be: a rank streams its shard with bounded memory, an epoch
can be a fixed number of steps, per-epoch measurements can use a fixed subset; the final test metrics still use
every test jet."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import READER_PARAMS, ROOT, STACK, TINY
from ucluster_spark import config

pytestmark = pytest.mark.slow

READ_WHOLE_SHARD = """
import resource, sys
import tensorflow as tf
from ucluster_spark.executor.reader import training_batches

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

jets = 0
with training_batches(sys.argv[1], shard=0, shard_count=1, max_constituents=100, n_features=8, batch_sizes=[512],
                      shuffle_buffer=2048, seed=1, reader=sys.argv[2]) as ds:
    for step, batch in enumerate(ds):
        jets += len(batch["mass"])
        if step == 10:  # the reader, its buffers and the shuffle buffer are all in use by now
            steady = peak_mb()
print(jets, peak_mb() - steady)
"""


@pytest.fixture(scope="module")
def many_row_groups(tmp_path_factory):
    """~190 MB of constituents (incompressible noise) in 120 row groups of 500 jets over two files."""
    root = tmp_path_factory.mktemp("large") / "train"
    root.mkdir()
    rng = np.random.default_rng(0)
    per_file, values = 30_000, 100 * 8
    for index in range(2):
        flat = pa.array(rng.normal(size=per_file * values).astype(np.float32))
        offsets = pa.array(np.arange(0, per_file * values + 1, values, dtype=np.int32))
        table = pa.table(
            {
                "jet_id": [f"noise-{index}-{i}" for i in range(per_file)],
                "mass": rng.uniform(0, 200, per_file).astype(np.float32),
                "constituents": pa.ListArray.from_arrays(offsets, flat),
            }
        )
        pq.write_table(table, root / f"part-{index}.parquet", row_group_size=500)
    return root, 2 * per_file, 2 * per_file * values * 4 / 2**20


@pytest.mark.parametrize("reader", READER_PARAMS)
def test_a_shard_is_streamed_never_read_whole(many_row_groups, reader):
    """A rank reads a bounded number of row groups at a time: once its pipeline is full (11 batches, ~11 row
    groups), reading the remaining ~170 MB grows its peak memory by a small fraction of that (a whole read would
    add all of it)."""
    root, jets, megabytes = many_row_groups
    script = textwrap.dedent(READ_WHOLE_SHARD)
    result = subprocess.run(
        [sys.executable, "-c", script, root.as_uri(), reader], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    read, growth = result.stdout.split()[-2:]
    assert int(read) == jets
    assert float(growth) < megabytes / 4, f"reading {megabytes:.0f} MB grew the peak by {float(growth):.0f} MB"


@pytest.mark.portable
def test_fixed_steps_per_epoch_and_a_subset_for_the_per_epoch_measurements(spark, synthetic_dataset, tmp_path):
    """train.steps_per_epoch=3 on 2 ranks: the first 3 steps of a 6-step pass, half the training jets; the per-epoch
    validation on about half the split (train.epoch_eval_max_jets); the final test metrics on every test jet; every
    rank's peak memory and the k-means time in the records."""
    from ucluster_spark.driver.launcher import train

    root, info, _ = synthetic_dataset
    n_val = info.n_jets("val")
    overrides = [f"data.path={root}", f"run.output={tmp_path / 'run'}", *TINY, *STACK, "train.steps_per_epoch=3",
                 f"train.epoch_eval_max_jets={n_val // 2}"]  # fmt: skip
    result = train(spark, config.load(ROOT / "conf/local.yaml", overrides))
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [r["global_step"] for r in history] == [3, 6]
    log = (tmp_path / "run" / "train.log").read_text()
    for record in history:
        jets = round(record["jets_per_second"] * record["seconds"])
        assert f"{jets} jets per epoch (train.steps_per_epoch; a pass over every jet takes 6 steps)" in log
        assert 0.4 < jets / info.n_jets("train") < 0.6
        assert 0 < sum(record["val_cluster_sizes"]) < n_val
        assert len(record["peak_rss_mb"]) == 2 and min(record["peak_rss_mb"]) > 100
    assert history[0]["kmeans_seconds"] > 0 and "kmeans_seconds" not in history[1]
    assert sum(history[0]["val_cluster_sizes"]) == sum(history[1]["val_cluster_sizes"])  # the same subset
    assert result.metrics["n_jets"] == info.n_jets("test")
    assert "3 steps/epoch on every rank" in log


def test_a_replicated_dataset_copies_the_training_jets_under_new_ids(spark, synthetic_dataset, tmp_path):
    from benchmarks.replicate import replicate_training_split
    from ucluster_spark.data.dataset import check_files, load_info

    root, info, _ = synthetic_dataset
    written = replicate_training_split(spark, root, tmp_path / "x3", 3, jets_per_file=100)
    copy = load_info(tmp_path / "x3")
    check_files(tmp_path / "x3", copy)  # files and metadata agree
    assert written["train_jets"] == copy.n_jets("train") == 3 * info.n_jets("train")
    assert copy.counts["val"] == info.counts["val"] and copy.counts["test"] == info.counts["test"]
    assert copy.source["generator"] == "replica" and copy.source["factor"] == 3
    ids = pq.read_table(tmp_path / "x3" / "train", columns=["jet_id"]).column("jet_id").to_pylist()
    originals = pq.read_table(root / "train", columns=["jet_id"]).column("jet_id").to_pylist()
    assert len(set(ids)) == len(ids)
    assert sorted(i.rpartition("#r")[0] for i in ids) == sorted(originals * 3)
    footers = [pq.ParquetFile(f).metadata for f in (tmp_path / "x3" / "train").glob("*.parquet")]
    assert max(f.num_rows for f in footers) <= 100 and {f.num_row_groups for f in footers} == {1}
