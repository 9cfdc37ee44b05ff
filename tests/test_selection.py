"""Choosing the final model without labels: the stop rules on made-up validation histories."""

import pytest

from ucluster_spark.selection import chosen_point, settled, validation_points

pytestmark = pytest.mark.portable  # plain Python: also in the current-releases environment


def _points(changes, losses=None, every=100):
    losses = losses or [1.0] * len(changes)
    return [
        {"clustering_step": i * every, "assignment_change": c, "clustering_loss_per_jet": loss}
        for i, (c, loss) in enumerate(zip(changes, losses, strict=True))
    ]


def test_the_assignment_rule_waits_for_patience_points_in_a_row_under_the_tolerance():
    points = _points([None, 0.2, 0.05, 0.004, 0.02, 0.003, 0.002, 0.001, 0.0])
    assert chosen_point(points, "assignments", tolerance=0.01, patience=3) == 7  # 0.003, 0.002, 0.001
    assert chosen_point(points, "assignments", tolerance=0.01, patience=1) == 3
    assert chosen_point(points, "assignments", tolerance=0.001, patience=1) == 8
    assert chosen_point(points, "assignments", tolerance=1e-6, patience=2) is None


def test_no_stop_before_the_minimum_clustering_steps():
    points = _points([None, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert chosen_point(points, "assignments", tolerance=0.01, patience=2) == 2
    assert chosen_point(points, "assignments", tolerance=0.01, patience=2, min_steps=300) == 4  # steps 300, 400


def test_the_loss_rule_stops_on_a_plateau_not_while_the_loss_falls():
    losses = [0.10, 0.08, 0.06, 0.05, 0.0499, 0.0498, 0.0499, 0.02]
    points = _points([None] * len(losses), losses)
    assert chosen_point(points, "loss", tolerance=0.01, patience=3) == 6  # three changes under 1 % (one a rise)
    assert not settled(points[:5], "loss", tolerance=0.01, patience=3)


def test_never_is_never_and_missing_measures_do_not_settle():
    points = _points([0.0] * 5)
    assert chosen_point(points, "never", 0.5, 1) is None
    assert not settled(_points([None, None]), "assignments", 0.5, 1)


def test_points_are_read_in_order_from_every_epoch_record():
    history = [{"epoch": 0}, {"epoch": 1, "validations": [{"a": 1}, {"a": 2}]}, {"epoch": 2, "validations": [{"a": 3}]}]
    assert [p["a"] for p in validation_points(history)] == [1, 2, 3]
