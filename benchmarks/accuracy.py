"""Clustering accuracy of UCluster trained without labels, against k-means / GMM on jet observables.

    .venv/bin/python benchmarks/accuracy.py --data DATASET_DIR [--config conf/accuracy.yaml] [--output RUN_DIR]
                                            [section.key=value ...]

Trains through the full stack (Spark local[2] + petastorm + horovod.spark.run), then prints one JSON document:
test accuracy / NMI / ARI, the best validation epoch, the schedule and data size, the wall time, the
observable baselines on the same test split, and diagnostics of what limits the accuracy (supervised probes, with
labels, of the auxiliary target's observables and of the learned embedding). The same JSON is written to
RUN_DIR/benchmark.json; ``--report-only RUN_DIR`` recomputes it for a finished run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_report(run_dir, data_dir, cfg, wall_seconds: float | None) -> dict:
    """The benchmark's numbers from a finished run directory, plus the observable baselines on the same split."""
    from ucluster_spark import store
    from ucluster_spark.baselines import observable_baselines

    layout = store.RunLayout(run_dir)
    history = json.loads(layout.history.read_text())
    m = json.loads(layout.metrics.read_text())
    clustered = [h for h in history if "val_clustering_accuracy" in h]
    best = max(clustered, key=lambda h: h["val_clustering_accuracy"]) if clustered else None
    return {
        "run_dir": str(run_dir),
        "test_clustering_accuracy": m["clustering_accuracy"],
        "test_nmi": m["nmi"],
        "test_ari": m["ari"],
        "test_jets": m["n_jets"],
        "test_confusion_matrix": m["confusion_matrix"],
        "cluster_to_class": m["cluster_to_class"],
        "best_val_epoch": best and {k: best[k] for k in ("epoch", "val_clustering_accuracy", "val_nmi")},
        "val_accuracy_curve": [round(h["val_clustering_accuracy"], 4) for h in clustered],
        "train_jets": m["data"]["n_train"],
        "epochs": cfg.train.epochs,
        "pretrain_epochs": cfg.train.pretrain_epochs,
        "global_batch": m["global_batch"],
        "train_seconds": sum(h["seconds"] for h in history),
        "wall_seconds": wall_seconds,
        "baselines": observable_baselines(data_dir, cfg.data.classes, seed=cfg.train.seed),
        "diagnostics": diagnostics(run_dir, data_dir, cfg, m),
    }


def diagnostics(run_dir, data_dir, cfg, metrics: dict) -> dict:
    """What limits the accuracy, measured with labels (never used in training): the class information in the
    auxiliary target alone, and in the learned embedding z (supervised probes on train -> test)."""
    from ucluster_spark.baselines import aux_target_ceiling, supervised_accuracy
    from ucluster_spark.inference import load_run
    from ucluster_spark.train import embeddings_of

    seed = cfg.train.seed
    _, model = load_run(run_dir)
    z_train, train_columns = embeddings_of(model, metrics["data"]["train_url"], cfg, 0, 1, columns=["label"])
    z_test, test_columns = embeddings_of(model, metrics["data"]["test_url"], cfg, 0, 1, columns=["label"])
    y_train, y_test = train_columns["label"], test_columns["label"]
    return {
        "aux_targets": cfg.data.aux_mass_columns,
        "aux_targets_supervised_accuracy": aux_target_ceiling(data_dir, cfg.data.aux_mass_columns, seed),
        "embedding_supervised_accuracy": supervised_accuracy(z_train, y_train, z_test, y_test, seed),
        "embedding_std_test": z_test.std(axis=0).round(5).tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared or generated dataset directory")
    parser.add_argument("--config", default=str(ROOT / "conf/accuracy.yaml"))
    parser.add_argument("--output", help="run directory (default runs/<timestamp>)")
    parser.add_argument("--report-only", metavar="RUN_DIR", help="skip training: report on a finished run")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    from ucluster_spark import config, store
    from ucluster_spark.launcher import train
    from ucluster_spark.spark import get_session

    overrides = [*args.overrides, f"data.path={args.data}"] + ([f"run.output={args.output}"] if args.output else [])
    cfg = config.load(args.config, overrides)
    if args.report_only:  # recompute the report; keep the wall time measured when the run trained
        previous = Path(args.report_only) / "benchmark.json"
        wall = json.loads(previous.read_text()).get("wall_seconds") if previous.exists() else None
        report = build_report(args.report_only, args.data, cfg, wall)
        store.atomic_write_json(previous, report)
        print(json.dumps(report, indent=2))
        return
    start = time.time()
    spark = get_session("ucluster-accuracy")
    try:
        result = train(spark, cfg)
    finally:
        spark.stop()
    wall = time.time() - start
    report = build_report(result.run_dir, args.data, cfg, wall)
    store.atomic_write_json(Path(result.run_dir) / "benchmark.json", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
