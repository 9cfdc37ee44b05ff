"""The PNG writers: summaries in, a whole PNG out (never a partial file under the final name)."""

import numpy as np
import pytest

from benchmarks.scaling_plot import scaling_plot
from ucluster_spark import plots

pytestmark = pytest.mark.portable  # no horovod, no petastorm: also in the current-releases environment

PNG = b"\x89PNG\r\n\x1a\n"


def test_mass_histogram_counts_every_jet_in_its_cluster_and_bin():
    counts = plots.mass_histogram(np.array([0, 0, 1, 1, 1]), np.array([-3.0, 81.0, 84.9, 400.0, 299.9]), 2)
    assert counts.shape == (2, len(plots.MASS_EDGES) - 1) and counts.sum() == 5
    assert counts[0, 0] == 1 and counts[0, 16] == 1  # negative -> first bin; 81 GeV -> [80, 85)
    assert counts[1, 16] == 1 and counts[1, -1] == 2  # 400 GeV overflows into the last bin with 299.9


def test_each_picture_is_a_complete_png_and_leaves_no_temporary_file(tmp_path):
    rng = np.random.default_rng(0)
    counts = np.array([[50, 3, 1], [2, 40, 9], [0, 7, 60]])
    plots.confusion_matrix(counts, ["w", "z", "t"], {0: 0, 1: 1, 2: 2}, tmp_path / "c.png")
    z = rng.normal(size=(300, 3))
    plots.embedding(z, rng.integers(0, 3, 300), rng.integers(0, 3, 300), ["w", "z", "t"], z[:3], tmp_path / "e.png")
    plots.embedding(z, rng.integers(0, 3, 300), None, [], z[:3], tmp_path / "e_unlabelled.png")
    history = [
        {"epoch": e, "focal_loss": 2.0 / (e + 1), "clustering_loss_per_jet": 0.5 / (e + 1),
         "val_embedding_std": [0.3, 0.2, 0.1], **({"val_clustering_accuracy": 0.6, "val_nmi": 0.3} if e else {})}
        for e in range(3)
    ]  # fmt: skip
    plots.training_curves(history, 1, tmp_path / "t.png")
    plots.mass_per_cluster(plots.mass_histogram(rng.integers(0, 3, 500), rng.uniform(0, 300, 500), 3),
                           tmp_path / "m.png")  # fmt: skip
    runs = {
        name: {"num_proc": n, "threads_per_rank": t, "launch_seconds": 5.0, "rank_setup_seconds": 2.0,
               "epochs": [{"seconds": 30.0}] * 3, "between_epochs_seconds": 3.0, "finish_seconds": 4.0}
        for name, n, t in (("stack_1x1", 1, 1), ("stack_2x1", 2, 1), ("stack_1x2", 1, 2))
    }  # fmt: skip
    report = {
        "threads_per_rank": 1,
        "runs": runs,
        "summary": {
            "steady_jets_per_second": {"bare": 160.0, "stack_1x1": 158.0, "stack_2x1": 300.0, "stack_1x2": 250.0},
            "scaling_efficiency": {"2": 0.95},
            "overhead_vs_bare": 0.0125,
            "startup_seconds": {"spark_session": 2.5},
        },
    }
    scaling_plot(report, tmp_path / "s.png")
    points = [
        {"clustering_step": 50 * i, "val_clustering_accuracy": 0.5 + 0.02 * i, "test_clustering_accuracy": 0.5,
         "assignment_change": None if i == 0 else 0.1 / i, "centroid_offsets": [0.01, None, 0.02],
         "cluster_radii": [0.01, None, 0.03]}
        for i in range(4)
    ]  # fmt: skip
    by_step = [{"epoch": 0}, {"epoch": 1, "validations": points[:2]}, {"epoch": 2, "validations": points[2:],
               "stopped_by": "train.stop_rule=assignments"}]  # fmt: skip
    plots.clustering_by_step(by_step, tmp_path / "b.png", reference=[(60, 0.52), (120, 0.6)])
    plots.clustering_by_step([{"epoch": 0}], tmp_path / "b_empty.png")  # pre-training only: empty panels, no error
    plots.clustering_comparison({"a": points, "b": points[:2]}, tmp_path / "v.png", reference=[(60, 0.52)])
    written = sorted(p.name for p in tmp_path.iterdir())
    expected = ["b.png", "b_empty.png", "c.png", "e.png", "e_unlabelled.png", "m.png", "s.png", "t.png", "v.png"]
    assert written == expected
    assert all((tmp_path / name).read_bytes()[:8] == PNG for name in written)
