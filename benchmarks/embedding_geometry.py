"""Where a trained model's centroids cut its embedding, against what the embedding knows (labels: diagnostics only).

    spark-submit jobs/evaluate.py --model RUN_DIR --data DATASET_DIR --output EVAL_DIR --splits train,test
    .venv/bin/python benchmarks/embedding_geometry.py NAME=EVAL_DIR [NAME=EVAL_DIR ...] [--results FILE.json]

Reads the evaluate job's assignments (z, distances to the centroids, label per jet) and prints one JSON document,
per model: its clustering accuracy on the test split; what z holds for a supervised classifier (gradient boosting,
fitted on the training split); and W versus Z: how well the model's own W and Z centroids separate the W and Z
test jets (each to the nearer of the two), against the same classifier on W and Z jets only, with the variances of
the W+Z jets along z's principal axes and how much of a linear W-versus-Z normal lies along each. Two models whose
z knows as much but whose centroids cut W from Z differently differ in their clustering phase, not their embedding.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def read_assignments(eval_dir: Path) -> dict[str, np.ndarray]:
    import pyarrow.dataset as ds

    columns = ["split", "label", "cluster", "embedding", "distances"]
    frame = ds.dataset(eval_dir / "assignments").to_table(columns=columns)
    frame = frame.to_pandas()
    if frame["label"].isna().any():
        raise SystemExit(f"{eval_dir}: some jets have no label; this diagnostic needs labelled jets")
    return {
        "split": frame["split"].to_numpy(),
        "label": frame["label"].to_numpy(np.int64),
        "cluster": frame["cluster"].to_numpy(np.int64),
        "z": np.stack(frame["embedding"].to_numpy()).astype(np.float64),
        "distances": np.stack(frame["distances"].to_numpy()).astype(np.float64),
    }


def geometry(jets: dict[str, np.ndarray], classes: list[str]) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ucluster_spark.metrics import contingency, summarize

    train, test = jets["split"] == "train", jets["split"] == "test"
    z, label, cluster = jets["z"], jets["label"], jets["cluster"]
    if not train.any() or not test.any():
        raise SystemExit("the assignments need the train and test splits (evaluate --splits train,test)")

    def linear():
        return make_pipeline(StandardScaler(), LogisticRegression(C=1e4, max_iter=5000))

    def boosted():
        return HistGradientBoostingClassifier(random_state=0)

    own = summarize(contingency(cluster[test], label[test], len(classes), len(classes)), classes)
    w, zb = classes.index("w"), classes.index("z")
    pair = np.isin(label, [w, zb])
    of_class = {classes.index(c): int(k) for k, c in own["cluster_to_class"].items()}
    w_nearer = jets["distances"][:, of_class[w]] < jets["distances"][:, of_class[zb]]  # the two centroids' cut
    own_wz = np.mean(np.where(w_nearer, w, zb)[pair & test] == label[pair & test])
    separation = linear().fit(z[pair & train], label[pair & train])
    direction = separation[-1].coef_[0] / separation[0].scale_  # a W-versus-Z normal (logistic), in z's units
    variances, axes = np.linalg.eigh(np.cov(z[pair & train].T))  # ascending
    return {
        "test_clustering_accuracy": round(own["clustering_accuracy"], 4),
        "test_jets": int(test.sum()),
        "supervised_on_z": round(float(boosted().fit(z[train], label[train]).score(z[test], label[test])), 4),
        "w_versus_z": {
            "own_centroids": round(float(own_wz), 4),
            "supervised_on_z": round(
                float(boosted().fit(z[pair & train], label[pair & train]).score(z[pair & test], label[pair & test])), 4
            ),
            "variances_along_principal_axes": [float(f"{v:.3g}") for v in variances],
            "linear_normal_on_principal_axes": [
                round(float(abs(c)), 3) for c in axes.T @ (direction / np.linalg.norm(direction))
            ],
        },
        "test_w_and_z_per_cluster": [  # the rows of the confusion matrix summarize already made
            {"cluster": k, "w": row[w], "z": row[zb]} for k, row in enumerate(own["confusion_matrix"])
        ],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="NAME=EVAL_DIR")
    parser.add_argument("--results", help="also write the JSON here")
    args = parser.parse_args(argv)
    report = {}
    for spec in args.models:
        name, _, path = spec.rpartition("=")  # the name may hold "=" (a setting), a path seldom does
        if not name or not path:
            parser.error(f"{spec!r}: expected NAME=EVAL_DIR")
        if not (Path(path) / "metrics.json").is_file() or not (Path(path) / "assignments").is_dir():
            parser.error(f"{path}: not an output of the evaluate job (metrics.json and assignments/ expected)")
        classes = json.loads((Path(path) / "metrics.json").read_text())["classes"]  # the labels' order
        report[name] = {"assignments": path, **geometry(read_assignments(Path(path)), classes)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.results:
        Path(args.results).write_text(text + "\n")


if __name__ == "__main__":
    main()
