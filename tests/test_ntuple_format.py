"""A user's own ROOT n-tuples through the ``data.ntuple`` mapping (files written with uproot by the test): the same
jets as the JetClass reader gives for the same file, the particles in either convention, and the mapping and the
files refused naming the key, the branch and the entry."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.sample_files.jetclass import jetclass_values, write_file
from ucluster_spark import config, schema
from ucluster_spark.data.formats.ntuple import inspect_ntuple, read_ntuple_entries
from ucluster_spark.data.sources import prepare
from ucluster_spark.errors import ConfigError, InputFileError

pytestmark = pytest.mark.portable
SLOTS = 30
VALUE = {"w": 5, "z": 7, "t": 9, "qcd": 0}
AS_JETCLASS = {"tree": "tree", "particles": ["part_px", "part_py", "part_pz", "part_energy"], "momenta": "px_py_pz_e",
               "jet": ["jet_pt", "jet_eta", "jet_phi", "jet_energy"], "jet_momenta": "pt_eta_phi_e",
               "label": "jet_label", "label_values": {"w": 5, "z": 7, "t": 9},
               "columns": {"sd_mass": "jet_sdmass"}}  # fmt: skip
OWN = {"tree": "Events", "particles": ["pf_pt", "pf_eta", "pf_phi", "pf_e"], "momenta": "pt_eta_phi_e",
       "label": "fj_label", "label_values": {"w": 5, "z": 7, "t": 9}}  # fmt: skip


def _data(mapping, *overrides):
    overrides = [f"data.max_constituents={SLOTS}", "data.files_per_split=2", *overrides]
    cfg = config.load(None, overrides, scope="data").data
    cfg.ntuple = mapping
    return cfg


def _labels(values):
    onehot = {"label_Wqq": "w", "label_Zqq": "z", "label_Tbqq": "t"}
    return [next(c for b, c in onehot.items() if values[b][i]) for i in range(len(values["jet_pt"]))]


def _own_ntuple(values, labels):
    """The same jets as a user's n-tuple: particles as pT, η, φ, E under other names, an integer label, no jet."""
    px, py, pz, e = (values[b] for b in ("part_px", "part_py", "part_pz", "part_energy"))
    pt = [np.hypot(x, y) for x, y in zip(px, py, strict=True)]
    return {"pf_pt": pt, "pf_eta": [np.arcsinh(z / p) for z, p in zip(pz, pt, strict=True)],
            "pf_phi": [np.arctan2(y, x) for x, y in zip(px, py, strict=True)], "pf_e": e,
            "fj_label": np.array([VALUE[c] for c in labels], np.int32)}  # fmt: skip


def _jets(root):
    splits = [root / split for split in schema.SPLITS if (root / split).is_dir()]
    rows = [row for split in splits for row in pq.read_table(split).to_pylist()]
    return {row[schema.JET_ID].split(":")[1]: row for row in rows}


@pytest.mark.slow
def test_an_ntuple_gives_the_jets_the_jetclass_reader_gives_and_either_convention_works(spark, tmp_path):
    values = jetclass_values(60, seed=3)
    labels = _labels(values)
    labels[4] = "qcd"  # a class the mapping does not name: left out and counted
    values["jet_label"] = np.array([VALUE[c] for c in labels], np.int32)
    write_file(tmp_path / "jets.root", values)
    write_file(tmp_path / "own.root", _own_ntuple(values, labels), tree="Events")

    prepare(spark, "jetclass", str(tmp_path / "jets.root"), tmp_path / "jetclass", _data({}))
    reference = _jets(tmp_path / "jetclass")
    mapped = prepare(spark, "ntuple", str(tmp_path / "jets.root"), tmp_path / "mapped", _data(AS_JETCLASS))
    assert mapped.source["reader"] == "ntuple" and mapped.source["dropped"]["not_requested_class"] == 1
    own = prepare(spark, "ntuple", str(tmp_path / "own.root"), tmp_path / "own", _data(OWN))
    assert own.source["dropped"]["not_requested_class"] == 1
    as_jetclass, as_own = _jets(tmp_path / "mapped"), _jets(tmp_path / "own")
    assert sorted(as_jetclass) == sorted(as_own) == sorted(str(i) for i in range(60) if i != 4)
    for i, jet in as_jetclass.items():
        expected = reference[i] if i != "4" else None
        if expected is not None:  # the JetClass reader read entry 4 by its one-hot label
            for column in (schema.LABEL_NAME, schema.LABEL, schema.MASS, schema.PT, schema.SD_MASS):
                assert jet[column] == expected[column], (i, column)
            np.testing.assert_array_equal(jet[schema.CONSTITUENTS], expected[schema.CONSTITUENTS])
        other = as_own[i]  # the same jets from pT, η, φ, E in float32, the jet summed from them
        assert other[schema.LABEL_NAME] == jet[schema.LABEL_NAME] == labels[int(i)]
        assert other[schema.SD_MASS] is None and other[schema.N_CONSTITUENTS] == jet[schema.N_CONSTITUENTS]
        assert other[schema.MASS] == pytest.approx(jet[schema.MASS], rel=1e-3, abs=0.05)
        np.testing.assert_allclose(other[schema.CONSTITUENTS], jet[schema.CONSTITUENTS], atol=2e-3)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"label_values": {"w": 5, "z": 7}}, r"data.ntuple.label_values: no value for class 't'"),
        ({"momenta": "pxpypze"}, r"data.ntuple.momenta: 'pxpypze' is not one of"),
        ({"particles": ["pf_pt", "pf_eta", "pf_phi"]}, r"data.ntuple.particles: four branch names"),
        ({"particles": "pf_pt"}, r"data.ntuple.particles: expected list"),
        ({"colour": "red"}, r"data.ntuple.colour: unknown key"),
        ({"label": ""}, r"data.ntuple.label: required"),
        ({"columns": {"mass": "fj_m"}}, r"data.ntuple.columns: 'mass' is not one of"),
    ],
)
def test_a_mapping_that_cannot_work_is_refused_naming_its_key(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        inspect_ntuple(str(tmp_path / "none.root"), _data({**OWN, **change}))


def test_a_file_the_mapping_does_not_fit_and_unphysical_particles_are_named(tmp_path):
    values = jetclass_values(12, seed=4)
    labels = _labels(values)
    own = _own_ntuple(values, labels)
    write_file(tmp_path / "own.root", own, tree="Events")
    with pytest.raises(InputFileError, match=r"own.root: TTree 'Events' lacks branch 'fj_msd' \(named in data.ntu"):
        inspect_ntuple(str(tmp_path / "own.root"), _data({**OWN, "columns": {"sd_mass": "fj_msd"}}))
    with pytest.raises(InputFileError, match=r"own.root: no TTree 'tree'"):
        inspect_ntuple(str(tmp_path / "own.root"), _data({**OWN, "tree": "tree"}))

    own["pf_e"][6] = own["pf_e"][6].copy()
    own["pf_e"][6][0] = 0.0  # a particle without energy
    write_file(tmp_path / "bad.root", own, tree="Events")
    with pytest.raises(InputFileError, match=r"bad.root: entry 6 has a particle with pT or E <= 0 in branches"):
        read_ntuple_entries(str(tmp_path / "bad.root"), 0, 12, _data(OWN), drop_bad_jets=False)
    jets, dropped = read_ntuple_entries(str(tmp_path / "bad.root"), 0, 12, _data(OWN), drop_bad_jets=True)
    assert dropped["unphysical"] == 1 and len(jets) == 11 and "bad.root:6" not in set(jets[schema.JET_ID])
