"""Clustering accuracy of UCluster trained without labels, against k-means / GMM on jet observables.

    .venv/bin/python benchmarks/accuracy.py --data DATASET_DIR [--config conf/accuracy.yaml] --output RUN_DIR
                                            [--seeds 7,8,9] [--results benchmarks/results/accuracy.json]
                                            [section.key=value ...]
    .venv/bin/python benchmarks/accuracy.py --data DATASET_DIR --report-only RUN_DIR [...]
    .venv/bin/python benchmarks/accuracy.py --data DATASET_DIR --start-from CHECKPOINT_DIR --output RUN_DIR [...]
    .venv/bin/python benchmarks/accuracy.py --table benchmarks/results/accuracy.json
    .venv/bin/python benchmarks/accuracy.py --compare NAME=RESULTS.json [NAME=RESULTS.json ...] [--plot FILE.png]

Trains through the full stack (Spark local[2] + petastorm + horovod.spark.run) once per seed (run directories
RUN_DIR-s<seed>; one seed: RUN_DIR itself), then prints one JSON document: per seed the test accuracy / NMI / ARI,
the k-means start (validation and test) and what the clustering phase added to it, the validation curve with the
cluster sizes, the wall time; over the seeds the mean and spread; the observable baselines on the same test split;
and diagnostics of what limits the accuracy (supervised probes, with labels, of the auxiliary target's
observables and of the learned embedding). Each run's report is also written to RUN_DIR/benchmark.json.

Resumable: a seed whose run is finished is only reported, one with a checkpoint is resumed, so a long benchmark
killed with its session continues where it stopped when the same command is run again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
READOUT = ("clustering_accuracy", "nmi", "ari")
ORIGINAL_BY_STEP = ((600, 0.525), (1800, 0.533), (6000, 0.695), (9000, 0.782), (12000, 0.802), (27500, 0.810))
"""The original run's test accuracy (per-batch matching) by clustering step, batch 512 (docs/recipe.md)."""
POINT_KEYS = (
    "clustering_step",
    "clustering_jets",
    "alpha",
    "val_clustering_accuracy",
    "test_clustering_accuracy",
    "assignment_change",
    "clustering_loss_per_jet",
    "centroid_offsets",
    "cluster_radii",
    "val_cluster_sizes",
)


def run_report(run_dir, data_dir, cfg, wall_seconds: float | None, with_diagnostics: bool = True) -> dict:
    """One finished run: its test metrics, the k-means start, the validation curve and the diagnostics."""
    from ucluster_spark import plots, store
    from ucluster_spark.selection import validation_points

    layout = store.RunLayout(run_dir)
    history = json.loads(layout.history.read_text())
    m = json.loads(layout.metrics.read_text())
    pretrain = cfg.train.pretrain_epochs
    start = history[pretrain - 1] if pretrain else {}
    clustered = [h for h in history[pretrain:] if "val_clustering_accuracy" in h]
    best = max(clustered, key=lambda h: h["val_clustering_accuracy"]) if clustered else None
    report = {
        "run_dir": str(run_dir),
        "seed": cfg.train.seed,
        "test_clustering_accuracy": m["clustering_accuracy"],
        "test_nmi": m["nmi"],
        "test_ari": m["ari"],
        "test_jets": m["n_jets"],
        "test_confusion_matrix": m["confusion_matrix"],
        "test_cluster_sizes": m["cluster_sizes"],
        "cluster_to_class": m["cluster_to_class"],
        "kmeans_start": {
            "val_clustering_accuracy": start.get("val_clustering_accuracy"),
            "val_cluster_sizes": start.get("val_cluster_sizes"),
            "test_clustering_accuracy": start.get("kmeans_start_test_accuracy"),
            "test_nmi": start.get("kmeans_start_test_nmi"),
        },
        "best_val_epoch": best and {k: best[k] for k in ("epoch", "val_clustering_accuracy", "val_nmi")},
        "val_curve": [
            {
                k: h.get(k)
                for k in (
                    "epoch",
                    "alpha",
                    "learning_rate",
                    "val_clustering_accuracy",
                    "val_nmi",
                    "val_cluster_sizes",
                    "train_cluster_sizes",
                    "clustering_loss_per_jet",
                )
            }
            for h in history[max(pretrain - 1, 0) :]
        ],  # fmt: skip
        "train_jets": m["data"]["n_train"],
        "epochs": cfg.train.epochs,
        "pretrain_epochs": pretrain,
        "global_batch": m["global_batch"],
        "steps_per_epoch": history[0]["global_step"],
        "train_seconds": sum(h["seconds"] for h in history),
        "wall_seconds": wall_seconds,
        "diagnostics": diagnostics(data_dir, cfg, m, run_dir) if with_diagnostics else None,
    }
    points = validation_points(history)
    if points:
        report["validation_points"] = [{k: p.get(k) for k in POINT_KEYS} for p in points]
        report["model_selection"] = model_selection(points, cfg)
        plots.clustering_by_step(history, Path(run_dir) / "accuracy_by_step.png", reference=ORIGINAL_BY_STEP)
    report["stopped_by"] = m.get("stopped_by", "")
    report["clustering_steps"] = m.get("global_step", history[-1]["global_step"]) - pretrain * report["steps_per_epoch"]
    kmeans_test = report["kmeans_start"]["test_clustering_accuracy"]
    report["lift_over_kmeans_start_test"] = None if kmeans_test is None else m["clustering_accuracy"] - kmeans_test
    return report


def model_selection(points: list[dict], cfg) -> dict:
    """Where each label-free stop rule (with the run's tolerance, patience and minimum steps) would have ended
    training, next to the best point by validation and by test accuracy (labels: diagnostics only)."""
    from ucluster_spark.selection import chosen_point

    t = cfg.train

    def at(index: int | None) -> dict | None:
        if index is None:
            return None
        p = points[index]
        keys = ("clustering_step", "alpha", "val_clustering_accuracy", "test_clustering_accuracy")
        return {"point": index, **{k: p.get(k) for k in keys}}

    chosen = {
        rule: at(chosen_point(points, rule, t.stop_tolerance, t.stop_patience, t.stop_min_clustering_steps))
        for rule in ("assignments", "loss")
    }
    best_val = max(range(len(points)), key=lambda i: points[i]["val_clustering_accuracy"])
    tested = [i for i, p in enumerate(points) if p.get("test_clustering_accuracy") is not None]
    best_test = max(tested, key=lambda i: points[i]["test_clustering_accuracy"]) if tested else None
    return {
        "rule_settings": {"tolerance": t.stop_tolerance, "patience": t.stop_patience,
                          "min_clustering_steps": t.stop_min_clustering_steps},
        "chosen_by_rule": chosen,
        "best_by_validation_accuracy": at(best_val),
        "best_by_test_accuracy": at(best_test),
        "last": at(len(points) - 1),
    }  # fmt: skip


def diagnostics(data_dir, cfg, metrics: dict, run_dir) -> dict:
    """What limits the accuracy, measured with labels (never used in training): the class information in the
    auxiliary target alone, and in the learned embedding z (supervised probes on train -> test)."""
    from baselines import aux_target_ceiling, supervised_accuracy

    from ucluster_spark.executor.inference import load_run
    from ucluster_spark.executor.rank.evaluation import embeddings_of

    seed = cfg.train.seed
    _, model = load_run(run_dir)
    z_train, train_columns = embeddings_of(model, metrics["data"]["train_url"], cfg, 0, 1, columns=["label"])
    z_test, test_columns = embeddings_of(model, metrics["data"]["test_url"], cfg, 0, 1, columns=["label"])
    return {
        "aux_targets": cfg.data.aux_mass_columns,
        "aux_targets_supervised_accuracy": aux_target_ceiling(data_dir, cfg.data.aux_mass_columns, seed),
        "embedding_supervised_accuracy": supervised_accuracy(
            z_train, train_columns["label"], z_test, test_columns["label"], seed
        ),
        "embedding_std_test": z_test.std(axis=0).round(5).tolist(),
    }


def reference_rows(data_dir, classes: list[str], original: str, pretraining: str, seed: int) -> dict:
    """The original UCluster run's own models on this benchmark's jets (imported with ``ucluster-import``; no
    training here): its trained model with its own centroids (nearest centroid), k-means re-fitted on that model's
    z of the training jets, and k-means on the z of its pre-training save (the clustering phase's starting point).
    Scored on the whole validation and test splits."""
    from sklearn.cluster import KMeans

    from ucluster_spark import store
    from ucluster_spark.executor.inference import load_run
    from ucluster_spark.executor.rank.evaluation import embeddings_of, nearest_centroid
    from ucluster_spark.metrics import contingency, summarize

    root, k = store.local_path(data_dir), len(classes)

    def embedded(run_dir: str) -> tuple[dict, object]:
        cfg, model = load_run(run_dir)
        splits = {s: embeddings_of(model, store.file_url(root / s), cfg, 0, 1, columns=["label"])
                  for s in ("train", "val", "test")}  # fmt: skip
        return splits, model

    def scored(assign, splits: dict) -> dict:
        out = {}
        for split in ("val", "test"):
            z, columns = splits[split]
            summary = summarize(contingency(assign(z), columns["label"].astype(np.int64), k, k), classes)
            out.update({f"{split}_{key}": summary[key] for key in ("clustering_accuracy", "nmi", "ari", "n_jets")})
        out["test_cluster_sizes"] = summary["cluster_sizes"]
        return out

    def kmeans_on(splits: dict):
        fitted = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(splits["train"][0])
        return fitted.predict

    trained, model = embedded(original)
    centroids = model.centroids.numpy()
    pre, _ = embedded(pretraining)
    return {
        "original": original,
        "pretraining": pretraining,
        "original_own_centroids": scored(lambda z: nearest_centroid(z, centroids), trained),
        "kmeans_on_original_z": scored(kmeans_on(trained), trained),
        "kmeans_on_original_pretraining_z": scored(kmeans_on(pre), pre),
    }


def aggregate(runs: list[dict]) -> dict:
    """Mean and spread (max - min, and standard deviation) of the test metrics and the lift over the seeds."""
    out = {"seeds": [r["seed"] for r in runs]}
    keys = [f"test_{k}" for k in READOUT] + ["lift_over_kmeans_start_test"]
    for key in keys:
        values = [r[key] for r in runs if r[key] is not None]
        if values:
            out[key] = {
                "mean": statistics.fmean(values),
                "spread": max(values) - min(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values,
            }
    return out


def train_or_resume(cfg, start_from: str = "") -> float | None:
    """Train the run directory ``cfg.run.output`` to completion; the wall time, or None if it was already done.
    ``start_from``: a checkpoint directory (``RUN/checkpoints/epoch-NNNN``) copied into a fresh run directory
    first, so that runs with different clustering-phase settings continue one and the same pre-training."""
    from ucluster_spark import checkpoint, store
    from ucluster_spark.driver.launcher import train
    from ucluster_spark.driver.session import get_session

    run_dir = Path(cfg.run.output)
    if store.RunLayout(run_dir).metrics.exists():
        return None
    if start_from and checkpoint.latest(run_dir) is None:
        source = Path(start_from)
        if not (source / checkpoint.STATE).is_file():
            sys.exit(f"--start-from {source}: not a complete checkpoint directory")
        shutil.copytree(source, checkpoint.checkpoints_dir(run_dir) / source.name)
        store.atomic_write_text(checkpoint.checkpoints_dir(run_dir) / checkpoint.LATEST, source.name + "\n")
    resume = checkpoint.latest(run_dir) is not None
    print(f"[accuracy] {'resuming' if resume else 'training'} {run_dir}", file=sys.stderr)
    start = time.time()
    spark = get_session("ucluster-accuracy")
    try:
        train(spark, cfg, resume=resume)
    finally:
        spark.stop()
    return time.time() - start


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def docs_table(results: dict) -> str:
    """The accuracy table of docs/benchmarks/accuracy.md, generated from a committed results file."""
    agg, runs = results["aggregate"], results["runs"]
    base = results["baselines"]
    lines = [
        "| | test accuracy | NMI | ARI | k-means start: val / test | lift over it (test) |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        start = r["kmeans_start"]
        val, test = start["val_clustering_accuracy"], start["test_clustering_accuracy"]
        lift = r["lift_over_kmeans_start_test"]
        lines.append(
            f"| UCluster, seed {r['seed']} | {r['test_clustering_accuracy']:.3f} | {r['test_nmi']:.3f} | "
            f"{r['test_ari']:.3f} | {_fmt(val)} / {_fmt(test)} | {_fmt(lift, '+.3f')} |"
        )
    if len(runs) > 1:
        acc = agg["test_clustering_accuracy"]
        lines.append(
            f"| **UCluster, {len(runs)} seeds** | **{acc['mean']:.3f}** (spread {acc['spread']:.3f}) | "
            f"{agg['test_nmi']['mean']:.3f} | {agg['test_ari']['mean']:.3f} | | "
            + (f"{agg['lift_over_kmeans_start_test']['mean']:+.3f} |" if "lift_over_kmeans_start_test" in agg else "|")
        )
    lines += reference_table_rows(results.get("references"))
    if not base:
        return "\n".join(lines)
    for name, label in (("kmeans", "k-means"), ("gaussian_mixture", "Gaussian mixture")):
        b = base[name]
        lines.append(
            f"| {label} on {', '.join(base['observables'])} | {b['clustering_accuracy']:.3f} | {b['nmi']:.3f} | "
            f"{b['ari']:.3f} | | |"
        )
    lines.append(
        f"| supervised gradient boosting on the same observables (uses labels) | "
        f"{base['supervised_gradient_boosting_accuracy']:.3f} | | | | |"
    )
    return "\n".join(lines)


REFERENCE_LABELS = {
    "original_own_centroids": "the original UCluster's trained model, imported (its own centroids, its own jets)",
    "kmeans_on_original_z": "k-means on that model's z (fitted on this benchmark's training jets)",
    "kmeans_on_original_pretraining_z": "k-means on the z of the original's pre-training save (its clustering start)",
}


def reference_table_rows(references: dict | None) -> list[str]:
    """The docs table's rows of ``reference_rows``: test accuracy, NMI and ARI (no k-means start or lift: nothing
    is trained here)."""
    return [
        f"| {label} | {references[key]['test_clustering_accuracy']:.3f} | {references[key]['test_nmi']:.3f} | "
        f"{references[key]['test_ari']:.3f} | | |"
        for key, label in REFERENCE_LABELS.items()
        if references and key in references
    ]


def comparison(results: dict[str, dict]) -> str:
    """A table of runs that continue one pre-training with different clustering-phase settings (one seed each):
    accuracy at the k-means start and by clustering step, how far the centroids sit from their jets at the end,
    and the test accuracy of the final model on the whole split."""
    lines = [
        "| variant | val accuracy: k-means start → each point | test (whole split) | NMI | "
        "centroid offset / cluster radius at the end | jets changing cluster, last point |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        run = result["runs"][0]
        points = run["validation_points"]
        curve = " ".join(f"{p['val_clustering_accuracy']:.3f}" for p in points)
        last = points[-1]
        ratios = ", ".join(
            "–" if o is None else f"{o / r:.1f}" if r else "∞"
            for o, r in zip(last["centroid_offsets"], last["cluster_radii"], strict=True)
        )
        lines.append(
            f"| {name} | {curve} | {run['test_clustering_accuracy']:.3f} | {run['test_nmi']:.3f} | {ratios} | "
            f"{_fmt(last['assignment_change'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="prepared or generated dataset directory")
    parser.add_argument("--config", default=str(ROOT / "conf/accuracy.yaml"))
    parser.add_argument("--output", help="run directory (one seed) or its prefix (RUN_DIR-s<seed>)")
    parser.add_argument("--seeds", help="comma-separated train.seed values (default: the config's)")
    parser.add_argument("--results", help="also write the JSON here (e.g. benchmarks/results/accuracy.json)")
    parser.add_argument("--report-only", metavar="RUN_DIR", help="skip training: report on a finished run")
    parser.add_argument("--start-from", metavar="CHECKPOINT", help="continue a checkpoint with these settings")
    parser.add_argument("--table", metavar="RESULTS", help="print the docs' table of a results file")
    parser.add_argument("--quick", action="store_true", help="no labelled probes or observable baselines")
    parser.add_argument("--compare", nargs="+", metavar="NAME=RESULTS", help="table of runs continuing one checkpoint")
    parser.add_argument("--plot", help="with --compare: also draw their curves into this PNG")
    parser.add_argument("--original", metavar="RUN_DIR", help="reference rows: the original's imported trained model")
    parser.add_argument("--original-pretraining", metavar="RUN_DIR", help="with --original: its pre-training save")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()  # overrides may stand between options
    if args.table:
        print(docs_table(json.loads(Path(args.table).read_text())))
        return
    if args.compare:
        results = {n: json.loads(Path(f).read_text()) for n, f in (item.split("=", 1) for item in args.compare)}
        if args.plot:
            from ucluster_spark import plots

            runs = {name: result["runs"][0]["validation_points"] for name, result in results.items()}
            plots.clustering_comparison(runs, args.plot, reference=ORIGINAL_BY_STEP)
        print(comparison(results))
        return
    if bool(args.original) != bool(args.original_pretraining):
        parser.error("--original and --original-pretraining go together")
    if not args.data or not (args.output or args.report_only or args.original):
        parser.error("--data and --output (or --report-only, or --original) are required")
    if args.start_from and args.seeds and "," in args.seeds:
        parser.error("--start-from continues one checkpoint: give one seed (the checkpoint's)")

    from baselines import observable_baselines

    from ucluster_spark import config, store

    base_cfg = config.load(args.config, [*args.overrides, f"data.path={args.data}"])
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [base_cfg.train.seed]
    runs = []
    for seed in seeds if (args.output or args.report_only) else []:
        if args.report_only:
            run_dir = Path(args.report_only)
        else:
            run_dir = Path(args.output if len(seeds) == 1 else f"{args.output}-s{seed}")
        cfg = config.load(
            args.config, [*args.overrides, f"data.path={args.data}", f"train.seed={seed}", f"run.output={run_dir}"]
        )
        previous = run_dir / "benchmark.json"
        wall = None if args.report_only else train_or_resume(cfg, args.start_from or "")
        if wall is None and previous.exists():  # keep the wall time measured when the run trained
            wall = json.loads(previous.read_text()).get("wall_seconds")
        report = run_report(run_dir, args.data, cfg, wall, with_diagnostics=not args.quick)
        store.atomic_write_json(previous, report)
        runs.append(report)
        print(f"[accuracy] seed {seed}: test accuracy {report['test_clustering_accuracy']:.4f}", file=sys.stderr)
    references = None
    if args.original:
        references = reference_rows(args.data, base_cfg.data.classes, args.original, args.original_pretraining,
                                    base_cfg.train.seed)  # fmt: skip
        print(f"[accuracy] the original's model: test accuracy "
              f"{references['original_own_centroids']['test_clustering_accuracy']:.4f}", file=sys.stderr)  # fmt: skip
    results = {
        "command": " ".join(["benchmarks/accuracy.py", *sys.argv[1:]]),
        "data": {
            "path": args.data,
            **({"train_jets": runs[0]["train_jets"], "test_jets": runs[0]["test_jets"]} if runs else {}),
        },
        "config": base_cfg.to_dict(),
        "references": references,
        "aggregate": aggregate(runs),
        "baselines": None
        if args.quick
        else observable_baselines(args.data, base_cfg.data.classes, base_cfg.train.seed),
        "runs": runs,
    }
    text = json.dumps(results, indent=2)
    if args.results:
        store.atomic_write_text(args.results, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
