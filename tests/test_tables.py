"""Jets from a table of the Spark catalog, and assignments into one (a local Spark session's catalog; tables written
by the test): the table's jets become the dataset the JetClass reader makes of the same jets, a trained run assigns
them, and two run IDs' assignments land in one table, read back by SQL."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.conftest import STACK
from tests.sample_files.jetclass import jetclass_values, write_file
from ucluster_spark import config, schema
from ucluster_spark.data.dataset import DatasetError
from ucluster_spark.data.sources import prepare
from ucluster_spark.data.table import PARTICLES, prepare_table

pytestmark = [pytest.mark.slow, pytest.mark.portable]
ONEHOT = {"label_Wqq": "w", "label_Zqq": "z", "label_Tbqq": "t"}


def _data():
    return config.load(None, ["data.files_per_split=2"], scope="data").data


def _table_rows(values):
    """The jets of ``values`` in the input contract: one row per jet, particle arrays, the class by name."""
    n = len(values["jet_pt"])
    labels = [next(c for b, c in ONEHOT.items() if values[b][i]) for i in range(n)]
    rows = {"jet_id": np.arange(1000, 1000 + n), "label": labels, schema.SD_MASS: values["jet_sdmass"]}
    rows |= {column: [np.asarray(v, np.float64).tolist() for v in values[column]] for column in PARTICLES}
    return pd.DataFrame(rows)


def _jets(root):
    splits = [root / split for split in schema.SPLITS if (root / split).is_dir()]
    return {row[schema.JET_ID]: row for split in splits for row in pq.read_table(split).to_pylist()}


@pytest.fixture(scope="module")
def jets_table(spark, tmp_path_factory):
    """A table of 90 jets (and one of a class not asked for) in the catalog, and the same jets in a JetClass file."""
    folder = tmp_path_factory.mktemp("tables")
    values = jetclass_values(90, seed=5)
    write_file(folder / "same.root", values)
    frame = _table_rows(values)
    extra = frame.iloc[:1].assign(jet_id=5000, label="qcd")
    spark.createDataFrame(pd.concat([frame, extra])).write.option("path", str(folder / "jets")).saveAsTable("jets_in")
    return folder, values


def test_a_table_becomes_the_dataset_its_jets_make_as_files(spark, jets_table, tmp_path):
    folder, values = jets_table
    info = prepare_table(spark, "jets_in", tmp_path / "from-table", _data())
    assert info.source["reader"] == "table" and info.source["dropped"]["not_requested_class"] == 1
    prepare(spark, "jetclass", str(folder / "same.root"), tmp_path / "from-file", _data())
    table, files = _jets(tmp_path / "from-table"), _jets(tmp_path / "from-file")
    assert sorted(table) == [str(1000 + i) for i in range(90)]
    for i in range(90):
        row, same = table[str(1000 + i)], files[f"same.root:{i}"]
        assert row[schema.LABEL_NAME] == same[schema.LABEL_NAME] and row[schema.LABEL] == same[schema.LABEL]
        assert row[schema.SD_MASS] == same[schema.SD_MASS] and row[schema.N_CONSTITUENTS] == same[schema.N_CONSTITUENTS]
        assert row[schema.MASS] == pytest.approx(same[schema.MASS], rel=1e-3, abs=0.05)  # the jet summed in float64
        np.testing.assert_allclose(row[schema.CONSTITUENTS], same[schema.CONSTITUENTS], atol=1e-3)


def test_a_table_that_breaks_the_contract_is_refused_naming_the_column_or_the_jet(spark, jets_table, tmp_path):
    _, values = jets_table
    frame = _table_rows(jetclass_values(6, seed=6))
    spark.createDataFrame(frame.drop(columns=["label"])).createOrReplaceTempView("no_label")
    with pytest.raises(DatasetError, match=r"no_label: no column 'label'"):
        prepare_table(spark, "no_label", tmp_path / "a", _data())
    spark.createDataFrame(frame.assign(label=1)).createOrReplaceTempView("numbered")
    with pytest.raises(DatasetError, match=r"numbered: column 'label' is bigint, expected string"):
        prepare_table(spark, "numbered", tmp_path / "b", _data())
    with pytest.raises(DatasetError, match=r"--input-table nowhere: cannot be read"):
        prepare_table(spark, "nowhere", tmp_path / "c", _data())
    frame.at[3, "part_py"] = frame.at[3, "part_py"][:-1]
    spark.createDataFrame(frame).createOrReplaceTempView("jagged")
    with pytest.raises(DatasetError, match=r"jagged: jet '1003' has \d+ values in 'part_py' but \d+ in 'part_px'"):
        prepare_table(spark, "jagged", tmp_path / "d", _data())
    assert not any((tmp_path / name).exists() for name in "abcd")  # nothing written


def test_assignments_of_two_run_ids_land_in_one_table(spark, jets_table, two_rank_run, tmp_path):
    from ucluster_spark.config import EvaluateConfig
    from ucluster_spark.driver.evaluate import evaluate

    run_dir, _ = two_rank_run(STACK[0].split("=")[1])
    prepare_table(spark, "jets_in", tmp_path / "jets", _data())
    n_jets = 90

    def assign(run_id, out, mode="append"):
        settings = EvaluateConfig(table="assigned", run_id=run_id, table_mode=mode)
        return evaluate(spark, run_dir, tmp_path / "jets", tmp_path / out, settings)

    first, second = assign("nightly-1", "out-1"), assign("nightly-2", "out-2")
    assert first["table"]["rows"] == second["table"]["rows"] == n_jets
    assert first["table"]["model_version"].startswith(f"{run_dir.name}@")
    counted = "SELECT run_id, count(*) AS n, count(DISTINCT model_version) AS versions FROM assigned GROUP BY run_id"
    assert {r.run_id: (r.n, r.versions) for r in spark.sql(counted).collect()} == {
        "nightly-1": (n_jets, 1),
        "nightly-2": (n_jets, 1),
    }
    with pytest.raises(DatasetError, match=r"assigned already holds run ID 'nightly-1': pass --table-mode overwrite"):
        assign("nightly-1", "out-3")
    assert not (tmp_path / "out-3").exists()  # refused before any work
    again = assign("nightly-1", "out-4", mode="overwrite")  # a rerun replaces its own rows only
    assert again["table"]["rows"] == n_jets
    rows = spark.sql("SELECT * FROM assigned WHERE run_id = 'nightly-1'").toPandas()
    assert len(rows) == n_jets and set(rows[schema.JET_ID]) == {str(1000 + i) for i in range(n_jets)}
    assert spark.sql("SELECT count(*) AS n FROM assigned").collect()[0].n == 2 * n_jets

    # A rerun over a complete output (the pipeline's skipped stage): the table gets its rows once.
    from ucluster_spark.driver.evaluate import ensure_table

    held = ensure_table(spark, run_dir, tmp_path / "out-2", EvaluateConfig(table="assigned", run_id="nightly-2"))
    assert held["already_held"] and spark.sql("SELECT count(*) AS n FROM assigned").collect()[0].n == 2 * n_jets
    added = ensure_table(spark, run_dir, tmp_path / "out-2", EvaluateConfig(table="assigned", run_id="nightly-3"))
    assert added["rows"] == n_jets and spark.sql("SELECT count(*) AS n FROM assigned").collect()[0].n == 3 * n_jets
