import json

import numpy as np
import pytest

from tests.conftest import READER_PARAMS, needs_petastorm
from ucluster_spark import schema, store
from ucluster_spark.data.dataset import DatasetError, check_compatible, check_shardable, load_info, write_dataset
from ucluster_spark.data.features import constituent_features
from ucluster_spark.executor.reader import evaluation_batches, open_shard, shard_size, training_batches
from ucluster_spark.plan import EpochPlan

pytestmark = pytest.mark.slow


def _jet_ids(url, shard, shard_count, reader="petastorm"):
    ids = []
    with open_shard(
        url,
        shard=shard,
        shard_count=shard_count,
        columns=[schema.JET_ID],
        num_epochs=1,
        shuffle=False,
        seed=0,
        reader=reader,
    ) as ds:
        for batch in ds:
            ids.extend(v.decode() for v in batch[schema.JET_ID].numpy())
    return ids


def test_layout_counts_and_metadata(synthetic_dataset):
    root, info, frame = synthetic_dataset
    assert sorted(p.name for p in root.iterdir()) == [schema.METADATA_FILE, "test", "train", "val"]
    assert sum(info.n_jets(s) for s in schema.SPLITS) == len(frame)
    stored = json.loads((root / schema.METADATA_FILE).read_text())
    assert stored["feature_set"] == "ucluster8" and stored["max_constituents"] == 100
    assert load_info(root) == info
    assert not [p for p in root.parent.iterdir() if ".tmp-" in p.name]  # staging renamed away


@pytest.mark.parametrize("reader", READER_PARAMS)
@pytest.mark.parametrize("shard_count", [1, 2, 3])
def test_shards_are_disjoint_and_complete(synthetic_dataset, shard_count, reader):
    root, info, _ = synthetic_dataset
    url = info.split_url(root, "train")
    shards = [_jet_ids(url, shard, shard_count, reader) for shard in range(shard_count)]
    assert all(shards)
    assert sum(len(s) for s in shards) == len(set().union(*shards)) == info.n_jets("train")


def _epoch(url, shard_count, reader, seed=3):
    """The real path of a rank's epoch: shard sizes -> EpochPlan -> shuffled pass cut into its batches; the jet
    ids each rank gets, batch by batch."""
    sizes = [shard_size(url, shard=r, shard_count=shard_count, reader=reader) for r in range(shard_count)]
    plan = EpochPlan.for_shards(sizes, batch_size=16)
    per_rank = []
    for rank in range(shard_count):
        with training_batches(
            url, shard=rank, shard_count=shard_count, max_constituents=100, n_features=8, reader=reader, seed=seed,
            batch_sizes=plan.batch_sizes(rank), shuffle_buffer=64, target_columns=[schema.MASS, schema.JET_ID],
        ) as ds:  # fmt: skip
            assert ds.options().autotune.enabled is False  # its model thread delays deleting the iterator by seconds
            batches = [[v.decode() for v in b[schema.JET_ID].numpy()] for b in ds]
        assert [len(b) for b in batches] == plan.batch_sizes(rank)  # exactly plan.steps batches on every rank
        per_rank.append(batches)
    return sizes, per_rank


@pytest.mark.parametrize("reader", READER_PARAMS)
@pytest.mark.parametrize("shard_count", [1, 2, 3])
def test_a_training_epoch_holds_every_jet_once_in_the_planned_steps(synthetic_dataset, shard_count, reader):
    root, info, _ = synthetic_dataset
    _, per_rank = _epoch(info.split_url(root, "train"), shard_count, reader)
    seen = [jet for batches in per_rank for batch in batches for jet in batch]
    assert len(seen) == len(set(seen)) == info.n_jets("train")


@needs_petastorm
def test_both_readers_give_every_rank_the_same_jets_every_epoch(synthetic_dataset):
    """petastorm and pyarrow shard alike: the same shard sizes, the same jets on each rank in each epoch (in an
    order of their own); the arrow reader's order is a function of the seed."""
    root, info, _ = synthetic_dataset
    url = info.split_url(root, "train")
    for seed in (3, 4):  # two epochs' seeds
        sizes_p, petastorm = _epoch(url, 2, "petastorm", seed)
        sizes_a, arrow = _epoch(url, 2, "arrow", seed)
        assert sizes_p == sizes_a
        for rank in range(2):
            assert sorted(j for b in petastorm[rank] for j in b) == sorted(j for b in arrow[rank] for j in b)
        assert _epoch(url, 2, "arrow", seed)[1] == arrow  # reproducible
    assert _epoch(url, 2, "arrow", 3)[1] != _epoch(url, 2, "arrow", 4)[1]  # and reshuffled by epoch


def test_too_few_row_groups_for_the_ranks_is_refused_up_front(synthetic_dataset):
    root, _, _ = synthetic_dataset
    check_shardable(root, 4)
    with pytest.raises(DatasetError, match=r"4 parquet row group\(s\) cannot feed 5 ranks"):
        check_shardable(root, 5)


@pytest.mark.parametrize("reader", READER_PARAMS)
def test_reader_returns_the_constituents_and_labels_written(synthetic_dataset, reader):
    root, info, frame = synthetic_dataset
    by_id = frame.set_index(schema.JET_ID)
    url = info.split_url(root, "test")
    ids = _jet_ids(url, 0, 1, reader)
    with evaluation_batches(
        url, shard=0, shard_count=1, max_constituents=100, n_features=8, batch_size=32, columns=[schema.LABEL],
        reader=reader,
    ) as ds:  # fmt: skip
        batches = list(ds)
    x = np.concatenate([b[schema.CONSTITUENTS].numpy() for b in batches])
    labels = np.concatenate([b[schema.LABEL].numpy() for b in batches])
    assert x.shape == (len(ids), 100, 8)
    for i, jet_id in enumerate(ids):
        np.testing.assert_array_equal(x[i].ravel(), by_id.loc[jet_id, schema.CONSTITUENTS])
        assert labels[i] == by_id.loc[jet_id, schema.LABEL]


def test_split_is_a_deterministic_function_of_jet_id(spark, synthetic_dataset, tmp_path):
    from tests.conftest import synthetic_jets
    from ucluster_spark import config

    root, info, _ = synthetic_dataset
    again = write_dataset(
        spark,
        spark.createDataFrame(synthetic_jets(80), schema=schema.spark_schema()),
        tmp_path / "again",
        config.load(None).data,
        {},
    )
    assert again.counts == info.counts
    for split in schema.SPLITS:
        assert sorted(_jet_ids(info.split_url(root, split), 0, 1)) == sorted(
            _jet_ids(again.split_url(tmp_path / "again", split), 0, 1)
        )


def test_existing_dataset_is_refused_and_left_intact(spark, synthetic_dataset):
    from tests.conftest import synthetic_jets
    from ucluster_spark import config

    root, info, _ = synthetic_dataset
    df = spark.createDataFrame(synthetic_jets(5), schema=schema.spark_schema())
    with pytest.raises(DatasetError, match="already holds a ucluster dataset"):
        write_dataset(spark, df, root, config.load(None).data, {})
    assert load_info(root) == info


def test_failed_write_leaves_nothing_behind(spark, tmp_path):
    from ucluster_spark import config

    def explode(frames):
        for frame in frames:
            raise RuntimeError("injected failure inside a Spark task")
            yield frame

    from tests.conftest import synthetic_jets

    df = spark.createDataFrame(synthetic_jets(5), schema=schema.spark_schema()).mapInPandas(
        explode, schema=schema.spark_schema()
    )
    with pytest.raises(Exception, match="injected failure"):
        write_dataset(spark, df, tmp_path / "broken", config.load(None).data, {})
    assert list(tmp_path.iterdir()) == []


def test_aux_target_with_empty_values_is_refused_before_training(spark, synthetic_dataset, tmp_path):
    from tests.conftest import synthetic_jets
    from ucluster_spark import config
    from ucluster_spark.data.dataset import DatasetError, check_filled

    check_filled(synthetic_dataset[0], "train", ["mass", "sd_mass"])
    frame = synthetic_jets(20)
    frame.loc[frame.index[::7], schema.SD_MASS] = None  # soft drop not computed for some jets
    df = spark.createDataFrame(frame, schema=schema.spark_schema())
    root = tmp_path / "no-sd-mass"
    write_dataset(spark, df, root, config.load(None, ["data.files_per_split=1"]).data, {})
    check_filled(root, "train", ["mass"])
    with pytest.raises(DatasetError, match=r"train/part-.*parquet: column 'sd_mass' is empty for \d+ jet"):
        check_filled(root, "train", ["mass", "sd_mass"])


def test_incompatible_dataset_is_refused(synthetic_dataset):
    from ucluster_spark import config

    root, info, _ = synthetic_dataset
    with pytest.raises(DatasetError, match="asks for .ucluster8. with 30"):
        check_compatible(info, config.load(None, ["data.max_constituents=30"]).data, str(root))
    with pytest.raises(DatasetError, match="not a complete ucluster dataset"):
        load_info(root / "train")


def test_features_are_pt_ordered_relative_and_zero_padded():
    jet = np.array([1000.0, 0.5, 0.2, 1200.0])
    p4 = []
    for pt, deta, dphi in ((10.0, 0.1, -0.1), (300.0, 0.0, 0.05), (50.0, -0.2, 0.0)):
        eta, phi = 0.5 + deta, 0.2 + dphi
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        p4.append((px, py, pz, np.sqrt(px**2 + py**2 + pz**2)))
    out = constituent_features(np.array(p4), jet, 5, "ucluster8")
    assert out.shape == (5, 8) and out.dtype == np.float32
    np.testing.assert_allclose(np.exp(out[:3, 6]), [300.0, 50.0, 10.0], rtol=1e-5)  # log_pt, ordered
    np.testing.assert_allclose(out[:3, 0], [0.0, -0.2, 0.1], atol=1e-5)  # etarel
    np.testing.assert_allclose(out[:3, 1], [0.05, 0.0, -0.1], atol=1e-5)  # phirel
    np.testing.assert_allclose(out[:3, 3], np.hypot(out[:3, 0], out[:3, 1]), rtol=1e-5)  # deltaR
    assert np.all(out[3:] == 0)


def test_local_path_accepts_file_urls_and_dbfs_forms(tmp_path):
    assert store.local_path(tmp_path.as_uri()) == tmp_path
    assert str(store.local_path("dbfs:/ml/jets")) == "/dbfs/ml/jets"
    assert str(store.local_path("/dbfs/ml/jets")) == "/dbfs/ml/jets"
    from ucluster_spark.errors import BadInput

    for url in ("s3://bucket/jets", "s3a://bucket/jets", "abfss://jets@acct.dfs.core.windows.net/w", "gs://b/jets"):
        with pytest.raises(BadInput, match=r"is not supported .*use a local path, a file:// URL or a dbfs:/ path"):
            store.local_path(url)


def test_every_data_setting_is_classified_for_the_generation_cache():
    from dataclasses import fields, replace

    from ucluster_spark.config import DataConfig
    from ucluster_spark.data.dataset import GENERATION_FIELDS, generation_key

    training_only = {"path", "generated_root", "mass_bins", "mass_bin_edges_max", "aux_mass_columns", "reader"}
    training_only |= {"ntuple"}  # read by prepare only
    assert {f.name for f in fields(DataConfig)} == set(GENERATION_FIELDS) | training_only
    base = DataConfig()
    assert generation_key(replace(base, aux_mass_columns=["sd_mass"], mass_bins=10)) == generation_key(base)
    assert generation_key(replace(base, files_per_split=2)) != generation_key(base)
    keys = {
        generation_key(base),
        generation_key(replace(base, mass_window=[10.0, 200.0])),
        generation_key(replace(base, mass_window=[10.0, 150.0])),
        generation_key(replace(base, underlying_event=False)),
    }
    assert len(keys) == 4
    from ucluster_spark.config import load

    # The same window written as ints or floats is one setting.
    windowed = load(None, ["data.mass_window=[10,200]"]).data
    assert generation_key(windowed) == generation_key(replace(base, mass_window=[10.0, 200.0]))


def test_observable_baselines_score_on_the_evaluation_split(synthetic_dataset):
    from benchmarks.baselines import observable_baselines

    root, info, _ = synthetic_dataset
    result = observable_baselines(root, ["w", "z", "t"])
    # The synthetic classes differ clearly in mass and multiplicity: every method finds them.
    assert result["kmeans"]["n_jets"] == info.n_jets("test")
    assert result["kmeans"]["clustering_accuracy"] > 0.95
    assert result["gaussian_mixture"]["clustering_accuracy"] > 0.95
    assert result["supervised_gradient_boosting_accuracy"] > 0.95


@pytest.mark.parametrize("reader", READER_PARAMS)
def test_an_evaluation_subset_is_fixed_by_jet_id_not_by_position(synthetic_dataset, reader):
    """``train.epoch_eval_max_jets``: about the asked fraction, the same jets every pass and however the split is
    sharded, chosen before the forward pass."""
    root, info, _ = synthetic_dataset
    url = info.split_url(root, "train")

    def subset(shard, shard_count):
        with evaluation_batches(
            url, shard=shard, shard_count=shard_count, max_constituents=100, n_features=8, batch_size=32,
            columns=[schema.JET_ID, schema.LABEL], reader=reader, sample_fraction=0.3,
        ) as ds:  # fmt: skip
            return [v.decode() for b in ds for v in b[schema.JET_ID].numpy()]

    one_rank = subset(0, 1)
    everything = _jet_ids(url, 0, 1, reader)
    assert set(one_rank) < set(everything)
    assert 0.2 < len(one_rank) / len(everything) < 0.4
    assert subset(0, 1) == one_rank  # the same every pass
    assert sorted(subset(0, 2) + subset(1, 2)) == sorted(one_rank)  # and whatever the sharding


def test_row_groups_are_even_within_a_file_so_ranks_get_even_shards(spark, tmp_path, monkeypatch):
    """Ranks take every n-th row group: files of one full group and a small remainder gave one rank every full
    group (58/42 of the jets on 2 ranks). Row groups of equal size per file keep the shards within a few jets."""
    import pyarrow.dataset as pads

    from tests.conftest import synthetic_jets
    from ucluster_spark import config
    from ucluster_spark.data import dataset

    cfg = config.load(None, ["data.files_per_split=2"])
    df = spark.createDataFrame(synthetic_jets(700), schema=schema.spark_schema())
    write_dataset(spark, df, tmp_path / "small", cfg.data, {"generator": "tests.synthetic_jets"})
    file_bytes = max(p.stat().st_size for p in (tmp_path / "small" / "train").glob("*.parquet"))
    # Row groups of ~1/2.5 of those files: 5 needed, so 8 files of equal jets, one row group each.
    monkeypatch.setattr(dataset, "ROW_GROUP_BYTES", int(file_bytes / 2.5))
    info = write_dataset(spark, df, tmp_path / "ds", cfg.data, {"generator": "tests.synthetic_jets"})
    files = sorted(pads.dataset(str(tmp_path / "ds" / "train"), format="parquet").get_fragments(), key=lambda f: f.path)
    groups = [[piece.row_groups[0].num_rows for piece in f.split_by_row_group()] for f in files]
    assert len(groups) == dataset.FILE_MULTIPLE and all(len(sizes) == 1 for sizes in groups), groups
    assert max(map(max, groups)) - min(map(min, groups)) <= 1, groups  # round-robin: equal to one jet
    url = info.split_url(tmp_path / "ds", "train")
    for ranks in (2, 4, 8):
        shards = [shard_size(url, shard=rank, shard_count=ranks, reader="arrow") for rank in range(ranks)]
        assert sum(shards) == info.n_jets("train") and max(shards) - min(shards) <= ranks, (ranks, shards)
    assert len(info.files["val"]) == 2  # a split that fits its files_per_split keeps them
