"""Cluster-assignment throughput of the evaluate job against training throughput, per core (target: >= 3x).

    .venv/bin/python benchmarks/inference.py --model RUN_DIR [--data DATASET_DIR] [--output DIR] [--cores 2]

On the same model, prints one JSON document (also written to DIR/inference.json):
- training: the run's own steady epochs (all but the first), jets/s per core used (ranks x TensorFlow threads);
- forward only: the model's assignment function on in-memory batches in this process, one TensorFlow thread:
  the ceiling for the job, and what the training step costs against it;
- the evaluate job (Spark local[cores], parquet in, mapInPandas, parquet out, metrics and plots), whole dataset,
  twice in one Spark application: the first pays for Python workers, TensorFlow import and model load in every
  executor process; the second reuses them, as a long-running application or a large dataset does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 3.0


def training_per_core(run_dir: Path) -> dict[str, float]:
    from ucluster_spark import store
    from ucluster_spark.config import Config

    layout = store.RunLayout(run_dir)
    cfg = Config.from_dict(store.read_json(layout.model_config))
    history = store.read_json(layout.history)
    steady = history[1:] or history
    cores = cfg.run.num_proc * cfg.train.intra_op_threads
    rate = sum(h["jets_per_second"] for h in steady) / len(steady)
    return {"jets_per_second": rate, "cores": cores, "jets_per_second_per_core": rate / cores, "epochs": len(steady)}


def forward_only(run_dir: Path, data_dir: Path, batch_size: int, jets: int = 4096) -> dict[str, float]:
    """The executors' assignment function, one thread, on jets already in memory (no Spark, no parquet)."""
    import numpy as np
    import pyarrow.parquet as pq

    from ucluster_spark.executor.inference import Assigner, configure_threads

    configure_threads(1)
    assigner = Assigner(run_dir)
    table = pq.read_table(data_dir / "test", columns=["constituents"]).slice(0, jets)
    x = np.stack(table.column("constituents").to_pandas().to_numpy()).astype(np.float32)
    for start in range(0, min(len(x), 2 * batch_size), batch_size):  # trace and warm up
        assigner(x[start : start + batch_size], 5.0)
    started = time.perf_counter()
    for start in range(0, len(x), batch_size):
        assigner(x[start : start + batch_size], 5.0)
    seconds = time.perf_counter() - started
    return {"jets": len(x), "batch_size": batch_size, "jets_per_second_per_core": len(x) / seconds}


def evaluate_job(run_dir: Path, data_dir: Path | None, output: Path, cores: int, batch_size: int) -> list[dict]:
    from ucluster_spark.config import EvaluateConfig
    from ucluster_spark.driver.evaluate import evaluate
    from ucluster_spark.driver.session import get_session

    os.environ["UCLUSTER_SPARK_MASTER"] = f"local[{cores}]"
    spark = get_session("ucluster-inference-benchmark")
    results = []
    try:
        for attempt in ("first", "second"):
            started = time.time()
            settings = EvaluateConfig(batch_size=batch_size)
            result = evaluate(spark, run_dir, data_dir, output / attempt, settings, overwrite=True)
            results.append(
                {
                    "attempt": attempt,
                    "wall_seconds": time.time() - started,
                    **result["throughput"],
                    "n_jets": result["n_jets"],
                    "clustering_accuracy": result.get("clustering_accuracy"),
                }
            )
    finally:
        spark.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="finished training run directory")
    parser.add_argument("--data", help="dataset to assign (default: the run's own dataset)")
    parser.add_argument("--output", default="runs/inference-benchmark", help="directory for the evaluations")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="Spark local[N] for the evaluate job")
    parser.add_argument("--batch-size", type=int, default=1024, help="jets per forward pass (evaluate.batch_size)")
    args = parser.parse_args()

    from ucluster_spark import store
    from ucluster_spark.driver.evaluate import read_trained_run

    run_dir = store.local_path(args.model)
    data_dir = store.local_path(args.data) if args.data else read_trained_run(run_dir).dataset
    output = store.local_path(args.output)
    report = {
        "model": str(run_dir),
        "data": str(data_dir),
        "training": training_per_core(run_dir),
        "forward_only": forward_only(run_dir, data_dir, args.batch_size),
        "evaluate_job": evaluate_job(run_dir, data_dir, output, args.cores, args.batch_size),
    }
    train_rate = report["training"]["jets_per_second_per_core"]
    report["ratios_to_training_per_core"] = {
        "forward_only": report["forward_only"]["jets_per_second_per_core"] / train_rate,
        **{f"evaluate_job_{r['attempt']}": r["jets_per_second_per_core"] / train_rate for r in report["evaluate_job"]},
    }
    report["target_ratio"] = TARGET_RATIO
    report["target_met"] = report["ratios_to_training_per_core"]["evaluate_job_second"] >= TARGET_RATIO
    store.atomic_write_json(output / "inference.json", report)
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
