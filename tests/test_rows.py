"""The rules every file layout applies to a task's rows (``data/rows.py``): one set of messages and counts."""

import numpy as np
import pytest

from ucluster_spark import schema
from ucluster_spark.data.rows import RowFilter, jets_frame
from ucluster_spark.errors import InputFileError

pytestmark = pytest.mark.portable

CLASSES = np.array(["w", "qcd", "t", "w", "t", "w"])


def _selection(drop_bad_jets=False):
    return RowFilter("/data/f.h5", 100, 106, CLASSES, ["w", "t"], drop_bad_jets, unit="entry", units="entries")


def test_bad_values_fail_naming_file_column_and_row_unless_dropped():
    values = np.ones((6, 3))
    values[1, 0] = np.nan  # a qcd jet, not asked for: neither refused nor counted
    values[4, 2] = np.inf
    message = r"/data/f.h5: entry 104 holds NaN or inf in branch 'x' \(1 such jets in entries 100-105\); fix the input"
    with pytest.raises(InputFileError, match=message):
        _selection().non_finite("branch 'x'", values)
    with pytest.raises(InputFileError, match=r"/data/f.h5: entry 103 has no constituents \(no particle\)"):
        _selection().no_constituents(np.array([3, 0, 2, 0, 1, 2]), "no particle")

    selection = _selection(drop_bad_jets=True)
    selection.non_finite("branch 'x'", values)
    selection.no_constituents(np.array([3, 0, 2, 0, 1, 2]), "no particle")
    selection.mass_window(np.array([80.0, 80.0, 170.0, 90.0, 175.0, 300.0]), (60.0, 250.0))
    assert selection.rows.tolist() == [0, 2]
    assert selection.dropped == {"not_requested_class": 1, "non_finite": 1, "no_constituents": 1,
                                 "outside_mass_window": 1, "unphysical": 0}  # fmt: skip


def test_the_kept_jets_become_schema_rows_named_by_file_and_row():
    selection = _selection()
    selection.mass_window(np.zeros(6), None)  # no window: nothing left out, nothing counted
    assert selection.dropped["outside_mass_window"] == 0
    rows = selection.rows
    features = np.arange(len(rows) * 2 * 3, dtype=np.float32).reshape(len(rows), 2, 3)
    frame = jets_frame("/data/f.h5", 100, rows, CLASSES, ["w", "t"], features, np.full(len(rows), 2),
                       {schema.PT: np.arange(6.0), schema.SD_MASS: None})  # fmt: skip
    assert list(frame.columns) == list(schema.COLUMNS)
    assert frame[schema.JET_ID].tolist() == ["f.h5:100", "f.h5:102", "f.h5:103", "f.h5:104", "f.h5:105"]
    assert frame[schema.LABEL].tolist() == [0, 1, 0, 1, 0] and frame[schema.PT].tolist() == [0, 2, 3, 4, 5]
    assert frame[schema.SD_MASS].isna().all() and len(frame[schema.CONSTITUENTS][0]) == 6
    empty = jets_frame("/data/f.h5", 100, rows[:0], CLASSES, ["w", "t"], features[:0], np.zeros(0), {})
    assert len(empty) == 0 and list(empty.columns) == list(schema.COLUMNS)
