"""hls4ml HDF5 -> parquet through real Spark jobs, and every kind of bad input."""

import importlib
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.sample_files.hls4ml import (
    JET_COLUMNS,
    PARTICLE_COLUMNS,
    expected_features,
    jet_values,
    write_file,
)
from ucluster_spark import config, errors, schema
from ucluster_spark.data.dataset import DatasetError, load_info
from ucluster_spark.data.sources import prepare
from ucluster_spark.executor.reader import open_shard

pytestmark = pytest.mark.slow
WZT = config.load(None, ["data.classes=[w,z,t]", "data.files_per_split=3"]).data


def read_all(root, columns=(schema.JET_ID, schema.LABEL, schema.CONSTITUENTS)):
    out = {}
    info = load_info(root)
    for split in (s for s in schema.SPLITS if info.n_jets(s)):
        with open_shard(
            (root / split).as_uri(), shard=0, shard_count=1, columns=list(columns), num_epochs=1, shuffle=False, seed=0
        ) as ds:
            for batch in ds:
                fields = batch  # a dict of column tensors, whichever reader
                for i, jet_id in enumerate(fields[schema.JET_ID].numpy()):
                    out[jet_id.decode()] = {c: fields[c].numpy()[i] for c in columns if c != schema.JET_ID}
    return out


def test_round_trip_gives_the_same_constituents_and_labels(spark, tmp_path):
    values = jet_values(60, slots=100, seed=1)
    write_file(tmp_path / "jets_a.h5", values)
    info = prepare(spark, "hls4ml", str(tmp_path / "*.h5"), tmp_path / "ds", WZT)
    jets = read_all(tmp_path / "ds")
    wanted = [i for i in range(60) if i % 5 in (2, 3, 4)]  # w, z, t rows (classes cycle g,q,w,z,t)
    assert sorted(jets) == sorted(f"jets_a.h5:{i}" for i in wanted)
    assert sum(info.n_jets(s) for s in schema.SPLITS) == len(wanted)
    assert info.source["dropped"]["not_requested_class"] == 60 - len(wanted)
    for i in wanted:
        jet = jets[f"jets_a.h5:{i}"]
        assert jet[schema.LABEL] == ["w", "z", "t"].index("gqwzt"[i % 5])
        np.testing.assert_allclose(
            jet[schema.CONSTITUENTS].reshape(100, 8), expected_features(values, i), rtol=1e-6, atol=1e-6
        )


def test_columns_are_found_by_name_in_a_subset_in_another_order(spark, tmp_path):
    values = jet_values(30, seed=2)
    rng = np.random.default_rng(0)
    needed = ["j1_pt", "j1_etarel", "j1_phirel", "j1_ptrel", "j1_deltaR", "j1_e", "j1_erel", "j1_costhetarel"]
    (tmp_path / "full").mkdir()
    (tmp_path / "subset").mkdir()
    write_file(tmp_path / "full" / "f.h5", values)
    write_file(
        tmp_path / "subset" / "f.h5",
        values,
        particle_columns=list(rng.permutation(needed)),
        jet_columns=list(rng.permutation(["j_t", "j_mass", "j_w", "j_eta", "j_z", "j_pt", "j_g", "j_q"])),
    )
    prepare(spark, "hls4ml", str(tmp_path / "full" / "*.h5"), tmp_path / "ds_full", WZT)
    prepare(spark, "hls4ml", str(tmp_path / "subset" / "*.h5"), tmp_path / "ds_subset", WZT)
    full, subset = read_all(tmp_path / "ds_full"), read_all(tmp_path / "ds_subset")
    assert sorted(full) == sorted(subset)
    for jet_id in full:
        np.testing.assert_array_equal(full[jet_id][schema.CONSTITUENTS], subset[jet_id][schema.CONSTITUENTS])


def test_150_slot_files_are_truncated_to_the_leading_particles_and_mass_window_applies(spark, tmp_path):
    values = jet_values(40, slots=150, seed=3)
    write_file(tmp_path / "big.h5", values)
    windowed = config.load(None, ["data.classes=[w,z,t]", "data.files_per_split=3", "data.mass_window=[10,200]"])
    info = prepare(spark, "hls4ml", str(tmp_path / "big.h5"), tmp_path / "ds", windowed.data)
    jets = read_all(tmp_path / "ds")
    inside = [i for i in range(40) if i % 5 >= 2 and 10 < values["j_mass"][i] < 200]
    assert sorted(jets) == sorted(f"big.h5:{i}" for i in inside)
    assert info.source["dropped"]["outside_mass_window"] == sum(
        1 for i in range(40) if i % 5 >= 2 and not 10 < values["j_mass"][i] < 200
    )
    for i in inside:
        np.testing.assert_allclose(
            jets[f"big.h5:{i}"][schema.CONSTITUENTS].reshape(100, 8),
            expected_features(values, i, 100),
            rtol=1e-6,
            atol=1e-6,
        )


def _broken(tmp_path, name="bad.h5", **kwargs):
    values = kwargs.pop("values", None) or jet_values(20, seed=4)
    return write_file(tmp_path / name, values, **kwargs)


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda p: _broken(p, skip_datasets=("jetConstituentList",)),
            r"bad.h5: dataset 'jetConstituentList' is missing",
        ),
        (lambda p: _broken(p, skip_datasets=("particleFeatureNames",)), r"dataset 'particleFeatureNames' is missing"),
        (
            lambda p: _broken(p, particle_columns=[c for c in PARTICLE_COLUMNS if c != "j1_etarel"]),
            r"bad.h5: 'particleFeatureNames' lacks column\(s\) \['j1_etarel'\]",
        ),
        (
            lambda p: _broken(p, jet_columns=[c for c in JET_COLUMNS if c != "j_mass"]),
            r"'jetFeatureNames' lacks column\(s\) \['j_mass'\]",
        ),
        (lambda p: (p / "bad.h5").write_bytes(b"not hdf5"), r"bad.h5: not a readable HDF5 file"),
    ],
)
def test_structural_errors_are_named_before_spark_runs(spark, tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(DatasetError, match=message):
        prepare(spark, "hls4ml", str(tmp_path / "*.h5"), tmp_path / "ds", WZT)
    assert not (tmp_path / "ds").exists()


def test_wrong_rank_is_refused(spark, tmp_path):
    import h5py

    path = _broken(tmp_path)
    with h5py.File(path, "r+") as f:
        data = f["jetConstituentList"][()]
        del f["jetConstituentList"]
        f.create_dataset("jetConstituentList", data=data[:, :, 0])
    with pytest.raises(DatasetError, match=r"'jetConstituentList' must be 3-D .* got shape \(20, 100\)"):
        prepare(spark, "hls4ml", str(path), tmp_path / "ds", WZT)


def _corrupt(values, column, row, value, slot=None):
    values = {k: v.copy() for k, v in values.items()}
    if slot is None:
        values[column][row] = value
    else:
        values[column][row, slot] = value
    return values


@pytest.mark.parametrize(
    "corruption, message, reason",
    [
        (
            lambda v: _corrupt(v, "j1_etarel", 7, np.nan, slot=0),
            r"bad.h5: jet 7 holds NaN or inf in 'jetConstituentList' column 'j1_etarel'",
            "non_finite",
        ),
        (lambda v: _corrupt(v, "j_mass", 8, np.inf), r"jet 8 holds NaN or inf in 'jets' column 'j_mass'", "non_finite"),
        (
            lambda v: _corrupt(v, "j1_pt", 12, 0.0, slot=slice(None)),
            r"bad.h5: jet 12 has no constituents \(every j1_pt in 'jetConstituentList' is 0\)",
            "no_constituents",
        ),
    ],
)
def test_bad_jets_fail_by_default_and_are_counted_when_dropped(spark, tmp_path, corruption, message, reason):
    values = corruption(jet_values(20, seed=4))  # rows 7, 8 and 12 are w, t and w jets
    _broken(tmp_path, values=values)
    with pytest.raises(DatasetError, match=message):
        prepare(spark, "hls4ml", str(tmp_path / "*.h5"), tmp_path / "ds", WZT)
    assert not (tmp_path / "ds").exists()
    info = prepare(spark, "hls4ml", str(tmp_path / "*.h5"), tmp_path / "ds", WZT, drop_bad_jets=True)
    assert info.source["dropped"][reason] == 1
    assert sum(info.n_jets(s) for s in schema.SPLITS) == 12 - 1  # 12 w/z/t jets among 20, one dropped


def test_labels_that_are_not_one_hot_fail(spark, tmp_path):
    values = _corrupt(jet_values(20, seed=4), "j_z", 2, 1.0)  # row 2 is a w jet: now both j_w and j_z
    _broken(tmp_path, values=values)
    with pytest.raises(DatasetError, match=r"bad.h5: 'jets' row 2: class columns .* are not one-hot"):
        prepare(spark, "hls4ml", str(tmp_path / "*.h5"), tmp_path / "ds", WZT)


def test_glob_matching_nothing_and_existing_output(spark, tmp_path):
    with pytest.raises(DatasetError, match=r"matches no file"):
        prepare(spark, "hls4ml", str(tmp_path / "none*.h5"), tmp_path / "ds", WZT)
    _broken(tmp_path, name="ok.h5")
    prepare(spark, "hls4ml", str(tmp_path / "ok.h5"), tmp_path / "ds", WZT)
    before = json.loads((tmp_path / "ds" / schema.METADATA_FILE).read_text())
    with pytest.raises(DatasetError, match="already holds a ucluster dataset; pass --overwrite"):
        prepare(spark, "hls4ml", str(tmp_path / "ok.h5"), tmp_path / "ds", WZT)
    assert json.loads((tmp_path / "ds" / schema.METADATA_FILE).read_text()) == before
    prepare(spark, "hls4ml", str(tmp_path / "ok.h5"), tmp_path / "ds", WZT, overwrite=True)


def _job(name):
    return importlib.import_module(f"ucluster_spark.jobs.{name}")


def test_prepare_job_exit_codes_and_messages(tmp_path, capsys):
    prepare = _job("prepare")
    code = prepare.main(["--input", str(tmp_path / "x*.h5"), "--output", str(tmp_path / "ds"), "--classes", "w,y"])
    assert code == errors.EXIT_BAD_INPUT
    assert "data.classes: unknown class 'y'" in capsys.readouterr().err
    code = prepare.main(
        ["--input", str(tmp_path / "x*.h5"), "--output", str(tmp_path / "ds"), "--mass-window", "200,10"]
    )
    assert code == errors.EXIT_BAD_INPUT
    assert "--mass-window: data.mass_window must be [LO, HI] with LO < HI (GeV)" in capsys.readouterr().err


def test_prepare_job_end_to_end(tmp_path):
    write_file(tmp_path / "a.h5", jet_values(30, seed=6))
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [
            sys.executable,
            str(root / "jobs/prepare.py"),
            "--input",
            str(tmp_path / "*.h5"),
            "--output",
            str(tmp_path / "ds"),
            "--classes",
            "w,z,t",
            "--mass-window",
            "10,200",
            "--files-per-split",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "jets: train" in result.stdout and "dropped: {" in result.stdout
    stored = json.loads((tmp_path / "ds" / schema.METADATA_FILE).read_text())
    assert stored["source"]["reader"] == "hls4ml" and stored["classes"] == ["w", "z", "t"]
