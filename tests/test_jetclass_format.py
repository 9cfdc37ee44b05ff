"""JetClass-layout ROOT files -> parquet through real Spark jobs (files written with uproot by the test), and the
structural and per-jet bad input the reader refuses."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.sample_files.jetclass import jetclass_values, write_file
from ucluster_spark import config, schema
from ucluster_spark.data.dataset import DatasetError
from ucluster_spark.data.formats.jetclass import JetClassSource, inspect_tree, read_entries
from ucluster_spark.data.sources import prepare
from ucluster_spark.errors import InputFileError

pytestmark = pytest.mark.portable
SLOTS = 30


def _data(*overrides):
    return config.load(None, [f"data.max_constituents={SLOTS}", "data.files_per_split=2", *overrides],
                       scope="data").data  # fmt: skip


def _jets(root):
    rows = []
    for split in schema.SPLITS:
        if (root / split).is_dir():
            rows += pq.read_table(root / split).to_pylist()
    return {row[schema.JET_ID]: row for row in rows}


def _label(values, i):
    on = [b for b in values if b.startswith("label_") and values[b][i]]
    return {"label_Wqq": "w", "label_Zqq": "z", "label_Tbqq": "t"}[on[0]]


@pytest.mark.slow
def test_jetclass_files_become_a_dataset_of_the_jets_written(spark, tmp_path):
    a, b = jetclass_values(90, seed=1), jetclass_values(50, seed=2)
    write_file(tmp_path / "a.root", a)
    write_file(tmp_path / "b.root", b)
    info = prepare(spark, "jetclass", str(tmp_path / "*.root"), tmp_path / "ds", _data("data.classes=[w,z,t]"))
    assert info.source["reader"] == "jetclass" and info.source["jets_read"] == 140
    jets = _jets(tmp_path / "ds")
    assert sorted(jets) == sorted([f"a.root:{i}" for i in range(90)] + [f"b.root:{i}" for i in range(50)])
    for name, values in (("a.root", a), ("b.root", b)):
        for i in range(0, len(values["jet_pt"]), 7):
            jet = jets[f"{name}:{i}"]
            assert jet[schema.LABEL_NAME] == _label(values, i)
            assert jet[schema.LABEL] == ["w", "z", "t"].index(jet[schema.LABEL_NAME])
            pt, eta, energy = (float(values[k][i]) for k in ("jet_pt", "jet_eta", "jet_energy"))
            assert jet[schema.MASS] == pytest.approx(np.sqrt(energy**2 - (pt * np.cosh(eta)) ** 2), rel=1e-4)
            assert jet[schema.TAU21] == pytest.approx(values["jet_tau2"][i] / values["jet_tau1"][i], rel=1e-6)
            assert jet[schema.SD_MASS] == pytest.approx(values["jet_sdmass"][i])
            # The leading particle's inputs, computed here from the four-momenta written.
            px, py, pz, e = (np.asarray(values[k][i], np.float64) for k in ("part_px", "part_py", "part_pz",
                                                                             "part_energy"))  # fmt: skip
            assert jet[schema.N_CONSTITUENTS] == len(px)
            features = np.asarray(jet[schema.CONSTITUENTS]).reshape(SLOTS, 8)
            lead = np.argmax(np.hypot(px, py))
            lead_pt = np.hypot(px[lead], py[lead])
            names = schema.feature_names(_data().feature_set)
            assert features[0, names.index("log_pt")] == pytest.approx(np.log(lead_pt), abs=1e-5)
            assert features[0, names.index("etarel")] == pytest.approx(np.arcsinh(pz[lead] / lead_pt) - eta, abs=1e-4)
            assert features[0, names.index("log_e")] == pytest.approx(np.log(e[lead]), abs=1e-5)
            assert np.count_nonzero(np.abs(features).sum(axis=1)) == min(len(px), SLOTS)  # the rest exactly zero

    # Classes and the mass window select jets, each left-out jet counted by why.
    window = prepare(spark, "jetclass", str(tmp_path / "a.root"), tmp_path / "wt",
                     _data("data.classes=[w,t]", "data.mass_window=[0,300]"))  # fmt: skip
    labels = [_label(a, i) for i in range(90)]
    pt, eta, energy = (np.asarray(a[k], np.float64) for k in ("jet_pt", "jet_eta", "jet_energy"))
    mass = np.sqrt(energy**2 - (pt * np.cosh(eta)) ** 2)
    wanted = [i for i in range(90) if labels[i] != "z"]
    assert window.source["dropped"]["not_requested_class"] == labels.count("z")
    assert window.source["dropped"]["outside_mass_window"] == sum(mass[i] >= 300 for i in wanted)
    assert sorted(_jets(tmp_path / "wt")) == sorted(f"a.root:{i}" for i in wanted if mass[i] < 300)


def test_a_file_that_is_not_jetclass_is_refused_naming_it_and_its_branch(tmp_path):
    values = jetclass_values(20, seed=3)
    write_file(tmp_path / "ok.root", values)
    data = _data("data.classes=[w,z,t]")
    truncated = tmp_path / "truncated.root"
    truncated.write_bytes((tmp_path / "ok.root").read_bytes()[:3000])
    with pytest.raises(DatasetError, match=r"truncated.root: not a readable ROOT file"):
        JetClassSource.open(str(truncated), data)
    write_file(tmp_path / "no_energy.root", {k: v for k, v in values.items() if k != "part_energy"})
    with pytest.raises(DatasetError, match=r"no_energy.root: TTree 'tree' lacks branch\(es\) \['part_energy'\]"):
        JetClassSource.open(str(tmp_path / "no_energy.root"), data)
    write_file(tmp_path / "other.root", values, tree="events")
    with pytest.raises(DatasetError, match=r"other.root: no TTree 'tree' \(has: \['events'\]\)"):
        JetClassSource.open(str(tmp_path / "other.root"), data)
    with pytest.raises(DatasetError, match=r"data.classes: JetClass files have no 'q' jets"):
        JetClassSource.open(str(tmp_path / "ok.root"), _data("data.classes=[q,w]"))


def test_jagged_mismatches_labels_and_bad_values_are_named_by_entry(tmp_path):
    values = jetclass_values(20, seed=4)
    short = dict(values, part_energy=[*values["part_energy"][:7], values["part_energy"][7][:-1],
                                      *values["part_energy"][8:]])  # fmt: skip
    write_file(tmp_path / "short.root", short)
    data = _data("data.classes=[w,z,t]")
    layout = inspect_tree(str(tmp_path / "short.root"), ["w", "z", "t"])
    n = len(values["part_px"][7])
    with pytest.raises(InputFileError, match=rf"short.root: branch 'part_energy' entry 7 has {n - 1} particles but "
                                             rf"'part_px' has {n}"):  # fmt: skip
        read_entries(layout, 0, 20, data, drop_bad_jets=False)

    two_labels = dict(values, label_QCD=np.where(np.arange(20) == 5, 1, 0).astype(np.int32))
    write_file(tmp_path / "labels.root", two_labels)
    with pytest.raises(InputFileError, match=r"labels.root: entry 5: label branches .* are not one-hot"):
        read_entries(inspect_tree(str(tmp_path / "labels.root"), ["w"]), 0, 20, data, drop_bad_jets=False)

    nan = dict(values, jet_pt=np.where(np.arange(20) == 11, np.nan, values["jet_pt"]).astype(np.float32))
    write_file(tmp_path / "nan.root", nan)
    layout = inspect_tree(str(tmp_path / "nan.root"), ["w", "z", "t"])
    with pytest.raises(InputFileError, match=r"nan.root: entry 11 holds NaN or inf in branch 'jet_pt' .* --drop-bad"):
        read_entries(layout, 0, 20, data, drop_bad_jets=False)
    frame, dropped = read_entries(layout, 0, 20, data, drop_bad_jets=True)
    assert dropped["non_finite"] == 1 and "nan.root:11" not in set(frame[schema.JET_ID]) and len(frame) == 19


@pytest.mark.slow
def test_an_executors_input_error_reaches_the_job_as_bad_input_and_nothing_is_written(spark, tmp_path):
    values = jetclass_values(20, seed=5)
    bad = dict(values, part_py=[v if i != 3 else v[:1] for i, v in enumerate(values["part_py"])])
    write_file(tmp_path / "bad.root", bad)
    with pytest.raises(DatasetError, match=r"bad.root: branch 'part_py' entry 3 has 1 particles but 'part_px' has"):
        prepare(spark, "jetclass", str(tmp_path / "bad.root"), tmp_path / "ds", _data("data.classes=[w,z,t]"))
    assert not (tmp_path / "ds").exists()


def test_a_batch_of_jets_gets_the_features_each_jet_gets_alone():
    """The reader's batched features (padded slots holding junk, masked out) are the generator's per-jet ones."""
    from ucluster_spark.data.features import constituent_features, padded_constituent_features

    rng = np.random.default_rng(7)
    counts = rng.integers(1, 45, 12)
    p4 = rng.normal(size=(12, 45, 4)) * [5, 5, 20, 0] + [40, 10, 30, 0]
    p4[..., 3] = np.linalg.norm(p4[..., :3], axis=-1) + rng.uniform(0, 1, (12, 45))
    real = np.arange(45)[None, :] < counts[:, None]
    p4[~real] = rng.normal(size=(int((~real).sum()), 4)) * 1e3  # junk, never read
    jets = np.column_stack([rng.uniform(500, 900, 12), rng.uniform(-1, 1, 12), rng.uniform(-3, 3, 12),
                            rng.uniform(900, 1500, 12)])  # fmt: skip
    batch = padded_constituent_features(p4, real, jets, SLOTS, "ucluster8")
    for i, n in enumerate(counts):
        np.testing.assert_array_equal(batch[i], constituent_features(p4[i, :n], jets[i], SLOTS, "ucluster8"))
