"""Top-tagging landscape files (pandas HDF5, key ``table``) -> parquet through a real Spark job (files written by
pandas here), and the bad input the reader refuses."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.sample_files.toptagging import toptagging_frame, write_file
from ucluster_spark import config, schema
from ucluster_spark.data.dataset import DatasetError
from ucluster_spark.data.formats.toptagging import TopTaggingSource, inspect_frame, read_frame_rows
from ucluster_spark.data.sources import prepare
from ucluster_spark.errors import InputFileError

pytestmark = pytest.mark.portable
SLOTS = 30


def _data(*overrides):
    return config.load(None, [f"data.max_constituents={SLOTS}", "data.files_per_split=2", "data.classes=[t,qcd]",
                              *overrides], scope="data").data  # fmt: skip


@pytest.mark.slow
def test_top_tagging_files_of_both_pandas_formats_become_a_dataset_of_the_jets_written(spark, tmp_path):
    fixed, table = toptagging_frame(70, seed=1, particles=40), toptagging_frame(30, seed=2, particles=40)
    write_file(tmp_path / "train.h5", fixed)
    write_file(tmp_path / "val.h5", table, file_format="table")
    info = prepare(spark, "toptagging", str(tmp_path / "*.h5"), tmp_path / "ds", _data())
    assert info.source["reader"] == "toptagging" and info.source["jets_read"] == 100
    rows = [row for split in schema.SPLITS if (tmp_path / "ds" / split).is_dir()
            for row in pq.read_table(tmp_path / "ds" / split).to_pylist()]  # fmt: skip
    jets = {row[schema.JET_ID]: row for row in rows}
    assert sorted(jets) == sorted([f"train.h5:{i}" for i in range(70)] + [f"val.h5:{i}" for i in range(30)])
    for name, frame in (("train.h5", fixed), ("val.h5", table)):
        for i in range(0, len(frame), 9):
            jet = jets[f"{name}:{i}"]
            assert jet[schema.LABEL_NAME] == ("t" if frame["is_signal_new"][i] == 1 else "qcd")
            e, px, py, pz = (frame[[f"{c}_{k}" for k in range(40)]].to_numpy()[i] for c in ("E", "PX", "PY", "PZ"))
            real = e > 0
            assert jet[schema.N_CONSTITUENTS] == real.sum()
            total = np.array([px.sum(), py.sum(), pz.sum(), e.sum()])
            assert jet[schema.PT] == pytest.approx(np.hypot(total[0], total[1]), rel=1e-5)
            assert jet[schema.MASS] == pytest.approx(np.sqrt(total[3] ** 2 - (total[:3] ** 2).sum()), rel=1e-3)
            features = np.asarray(jet[schema.CONSTITUENTS]).reshape(SLOTS, 8)
            names = schema.feature_names(_data().feature_set)
            assert features[0, names.index("log_pt")] == pytest.approx(np.log(np.hypot(px[0], py[0])), abs=1e-5)
            assert np.count_nonzero(np.abs(features).sum(axis=1)) == min(real.sum(), SLOTS)


def test_a_file_that_is_not_the_landscape_layout_is_refused_naming_it_and_the_column(tmp_path):
    frame = toptagging_frame(10, seed=3, particles=5)
    write_file(tmp_path / "ok.h5", frame)
    layout = inspect_frame(str(tmp_path / "ok.h5"), ["t", "qcd"])
    assert (layout["n_jets"], layout["particles"]) == (10, [0, 1, 2, 3, 4])
    (tmp_path / "broken.h5").write_bytes((tmp_path / "ok.h5").read_bytes()[:2000])
    with pytest.raises(DatasetError, match=r"broken.h5: not a readable HDF5 file"):
        TopTaggingSource.open(str(tmp_path / "broken.h5"), _data())
    frame.to_hdf(tmp_path / "other.h5", key="jets", mode="w")
    with pytest.raises(DatasetError, match=r"other.h5: no key 'table' \(has: \['jets'\]\)"):
        TopTaggingSource.open(str(tmp_path / "other.h5"), _data())
    write_file(tmp_path / "no_pz.h5", frame.drop(columns=["PZ_3"]))
    with pytest.raises(DatasetError, match=r"no_pz.h5: 'table' lacks column\(s\) \['PZ_3'\]"):
        TopTaggingSource.open(str(tmp_path / "no_pz.h5"), _data())
    write_file(tmp_path / "no_label.h5", frame.drop(columns=["is_signal_new"]))
    with pytest.raises(DatasetError, match=r"no_label.h5: 'table' lacks column 'is_signal_new'"):
        TopTaggingSource.open(str(tmp_path / "no_label.h5"), _data())
    with pytest.raises(DatasetError, match=r"data.classes: top-tagging files have no 'w' jets"):
        TopTaggingSource.open(str(tmp_path / "ok.h5"), _data("data.classes=[t,w]"))


def test_labels_and_bad_values_are_named_by_row(tmp_path):
    frame = toptagging_frame(10, seed=4, particles=5)
    frame.loc[6, "is_signal_new"] = 2
    write_file(tmp_path / "label.h5", frame)
    with pytest.raises(InputFileError, match=r"label.h5: 'is_signal_new' row 6 is 2, not 0 or 1"):
        read_frame_rows(inspect_frame(str(tmp_path / "label.h5"), ["t"]), 0, 10, _data(), drop_bad_jets=False)
    frame = toptagging_frame(10, seed=4, particles=5)
    frame.loc[4, "PX_0"] = np.nan
    frame.loc[7, [f"E_{i}" for i in range(5)]] = 0.0
    write_file(tmp_path / "bad.h5", frame)
    layout = inspect_frame(str(tmp_path / "bad.h5"), ["t", "qcd"])
    with pytest.raises(InputFileError, match=r"bad.h5: row 4 holds NaN or inf in its constituents .* --drop-bad-jets"):
        read_frame_rows(layout, 0, 10, _data(), drop_bad_jets=False)
    with pytest.raises(InputFileError, match=r"bad.h5: row 7 has no constituents"):
        read_frame_rows(layout, 5, 10, _data(), drop_bad_jets=False)
    kept, dropped = read_frame_rows(layout, 0, 10, _data(), drop_bad_jets=True)
    assert (dropped["non_finite"], dropped["no_constituents"]) == (1, 1) and len(kept) == 8
