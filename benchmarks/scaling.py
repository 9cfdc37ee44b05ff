"""Throughput of the full stack against a bare TensorFlow loop: 1 vs 2 ranks, threads vs ranks, start-up vs
steady state, and the model's FLOP/s against the machine's measured peak.

    .venv/bin/python benchmarks/scaling.py [--config conf/scaling.yaml] [--data DATASET_DIR] [--output DIR]
                                           [section.key=value ...]

Measured one after the other on the same data and model (the config's training split, its per-rank batch):

- ``bare``: one process, no Spark/petastorm/Horovod, the training split in memory as numpy arrays, the same
  ``train.make_train_step`` (focal + clustering loss), one TensorFlow thread: the ceiling;
- ``stack_1x1``, ``stack_2x1`` (``--ranks``): Spark + petastorm + horovod.spark.run with 1 and 2 ranks, one
  TensorFlow thread each (intra- and inter-op; ``--threads-per-rank`` for executors with more cores);
- ``stack_1xN``: 1 rank with all N cores (``--threads``) as TensorFlow threads;
- ``barrier_1x1``, ``barrier_2x1`` (``--launchers``): the same through the barrier launcher (one Spark barrier
  stage, tf.distribute collectives) instead of horovod.spark.run, on the same data in the same run.

Spark runs in local mode with 2 cores unless spark-submit gives a master (see docs/benchmarks/scaling.md).

Steady state = the epochs after the first (which traces the graph). CPU per jet = the CPU time of one process (all
its threads; rank 0 for the stack) per jet it trains on: above the bare loop's, the stack's own cost. Start-up is
split into the Spark session, launch -> every rank past hvd.init (Spark job, task start, TensorFlow import, Gloo
rendezvous), rank set-up (model, shard sizes, broadcast) and the first epoch's extra time. Prints one JSON
document and writes it with a PNG to ``--output`` (default runs/scaling-<UTC time>). Run it alone on the machine:
it measures time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from provenance import machine

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"max_overhead_vs_bare": 0.05, "min_scaling_efficiency": 0.92}
LAYOUT_PREFIX = {"horovod": "stack", "barrier": "barrier"}


# ---- the bare loop: a separate process, so its TensorFlow thread pools are its own ------------------------------


def bare_loop(cfg, train_dir: str, threads: int) -> dict[str, Any]:
    """The same model and step as a rank, fed from numpy arrays in memory; also counts the step's FLOPs and the
    GEMM peak of this TensorFlow build on the same threads."""
    from dataclasses import replace

    import numpy as np
    import pyarrow.parquet as pq

    from ucluster_spark import _env  # noqa: F401  (before TensorFlow)

    import tensorflow as tf  # isort: skip

    from ucluster_spark.executor.losses import alpha_for_epoch
    from ucluster_spark.executor.model import build_model
    from ucluster_spark.executor.rank.environment import configure_threads
    from ucluster_spark.executor.rank.step import make_batch_norm_schedule, make_optimizer, make_train_step
    from ucluster_spark.schema import CONSTITUENTS, feature_names

    t, d = cfg.train, cfg.data
    configure_threads(replace(t, intra_op_threads=threads, inter_op_threads=threads))
    table = pq.read_table(train_dir, columns=[CONSTITUENTS, *d.aux_mass_columns])
    n_features = len(feature_names(d.feature_set))
    x = table.column(CONSTITUENTS).combine_chunks().flatten().to_numpy().astype(np.float32)
    x = x.reshape(len(table), d.max_constituents, n_features)
    targets = {c: table.column(c).to_numpy().astype(np.float32) for c in d.aux_mass_columns}

    tf.random.set_seed(t.seed)
    model = build_model(cfg)
    steps = len(x) // t.batch_size
    _, optimizer = make_optimizer(cfg, model, workers=1, steps_per_epoch=steps)
    bn_momentum = make_batch_norm_schedule(cfg, model, steps)
    alpha = tf.Variable(0.0, trainable=False)
    beta = tf.Variable(0.0, trainable=False)
    step = make_train_step(model, optimizer, cfg, alpha, beta, bn_momentum=bn_momentum)
    flops_per_step = padded_float_ops(cfg, n_features)

    one = tf.constant(1.0)  # gradient weight: one process, full batches
    rng = np.random.default_rng(t.seed)
    epochs = []
    for epoch in range(t.epochs):
        alpha.assign(alpha_for_epoch(epoch, t.pretrain_epochs, cfg.loss.alpha_start, cfg.loss.alpha_step))
        beta.assign(cfg.loss.clustering_weight if epoch >= t.pretrain_epochs else 0.0)
        order = rng.permutation(len(x))
        start, cpu = time.time(), time.process_time()
        for i in range(steps):
            rows = order[i * t.batch_size : (i + 1) * t.batch_size]
            batch = {CONSTITUENTS: tf.constant(x[rows])}
            batch.update({c: tf.constant(v[rows]) for c, v in targets.items()})
            step(batch, one)[0].numpy()
        epochs.append(
            {"seconds": time.time() - start, "cpu_seconds": time.process_time() - cpu, "jets": steps * t.batch_size}
        )
    return {
        "threads": threads,
        "batch_size": t.batch_size,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "flops_per_step": flops_per_step,
        "gemm_peak_flops": gemm_peak(),
    }


def padded_float_ops(cfg, n_features: int) -> int:
    """FLOPs of one training step counted on the padded layout (every slot's work, padding included): the packed
    step's own count depends on how many particles a batch holds, which a trace does not know. The same yardstick
    for either layout; the packed step does roughly (real particles / slots) of it."""
    from dataclasses import replace

    import tensorflow as tf

    from ucluster_spark.executor.model import build_model
    from ucluster_spark.executor.rank.step import make_optimizer, make_train_step
    from ucluster_spark.schema import CONSTITUENTS

    t, d = cfg.train, cfg.data
    padded = replace(cfg, model=replace(cfg.model, particle_layout="padded"))
    model = build_model(padded)
    _, optimizer = make_optimizer(padded, model, workers=1, steps_per_epoch=1)
    step = make_train_step(model, optimizer, padded, tf.Variable(0.0), tf.Variable(0.0))
    batch_spec = {CONSTITUENTS: tf.TensorSpec([t.batch_size, d.max_constituents, n_features], tf.float32)}
    batch_spec.update({c: tf.TensorSpec([t.batch_size], tf.float32) for c in d.aux_mass_columns})
    # The step itself is traced once for any batch size; count its FLOPs on a trace with the batch size known.
    concrete = tf.function(step.python_function).get_concrete_function(batch_spec, tf.TensorSpec([], tf.float32))
    return float_ops(concrete.graph)


def float_ops(graph) -> int:
    """Floating-point operations of one call of a traced graph, as TensorFlow's profiler counts them (ops with
    registered FLOP statistics: matmuls, convolutions, element-wise arithmetic; gathers and top-k count zero)."""
    import tensorflow as tf

    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def gemm_peak(n: int = 1024, repeats: int = 20) -> float:
    """FLOP/s of a large float32 matmul on this process's TensorFlow threads: what the hardware gives TF here."""
    import tensorflow as tf

    a = tf.random.uniform([n, n])
    b = tf.random.uniform([n, n])
    tf.linalg.matmul(a, b).numpy()
    start = time.time()
    for _ in range(repeats):
        tf.linalg.matmul(a, b).numpy()
    return 2 * n**3 * repeats / (time.time() - start)


def run_bare(
    config_path: str, overrides: list[str], train_dir: str, threads: int, env: dict[str, str], processes: int = 1
) -> list[dict[str, Any]]:
    """``processes`` independent bare loops at once: with more than one, what the hardware itself gives to data
    parallelism (shared memory bandwidth, clocks) without any communication, the ceiling for the stack's ranks.
    ``env`` is the ranks' environment (malloc settings act only at process start), so both compare alike."""
    command = [sys.executable, __file__, "--config", config_path, "--bare-loop", train_dir, str(threads), *overrides]
    running = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(processes)
    ]
    results = []
    for proc in running:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"bare loop failed ({proc.returncode}):\n{err[-4000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


# ---- the full stack -----------------------------------------------------------------------------------------------


def run_stack(spark, cfg, run_dir: Path) -> dict[str, Any]:
    """One training run through launcher.train, with its time split into start-up, steady state and the rest."""
    from ucluster_spark.driver.launcher import train

    called = time.time()
    result = train(spark, cfg)
    ended = time.time()
    history = json.loads((run_dir / "history.json").read_text())
    ranks_ready = max(r["rank_started_at"] for r in result.rank_results)
    last = history[-1]
    return {
        "num_proc": cfg.run.num_proc,
        "threads_per_rank": cfg.train.intra_op_threads,
        "epochs": [
            {
                "seconds": h["seconds"],
                "cpu_seconds": h["cpu_seconds"],  # rank 0's process
                "jets": h["jets_per_second"] * h["seconds"],
                "started_at": h["started_at"],
            }
            for h in history
        ],
        "launch_seconds": ranks_ready - called,
        "rank_setup_seconds": history[0]["started_at"] - ranks_ready,
        "between_epochs_seconds": sum(
            b["started_at"] - (a["started_at"] + a["seconds"]) for a, b in zip(history, history[1:], strict=False)
        ),
        "finish_seconds": ended - (last["started_at"] + last["seconds"]),
        "wall_seconds": ended - called,
        "test_clustering_accuracy": result.metrics["clustering_accuracy"],
        "run_dir": str(run_dir),
    }


# ---- numbers and picture ------------------------------------------------------------------------------------------


def cpu_ms_per_jet(epochs: list[dict], processes: int = 1) -> float:
    """CPU time one process spends per jet it trains on, steady state (a rank trains 1/processes of the jets)."""
    rest = epochs[1:]
    return 1000 * sum(e["cpu_seconds"] for e in rest) / (sum(e["jets"] for e in rest) / processes)


def steady(epochs: list[dict]) -> dict[str, float]:
    """Throughput of the epochs after the first (tracing, first reader) and what the first one cost on top."""
    rest = epochs[1:]
    jets, seconds = sum(e["jets"] for e in rest), sum(e["seconds"] for e in rest)
    per_epoch = seconds / len(rest)
    return {
        "jets_per_second": jets / seconds,
        "epoch_seconds": per_epoch,
        "first_epoch_extra_seconds": epochs[0]["seconds"] - per_epoch * epochs[0]["jets"] / (jets / len(rest)),
    }


def summarize(
    runs: dict[str, dict], bares: dict[int, list[dict]], spark_seconds: float, per_rank: int, threads: int
) -> dict[str, Any]:
    """The numbers the targets are about; ``per_rank`` threads for the rank-count runs and the bare loop,
    ``threads`` for the single-rank comparison."""
    rate = {name: steady(r["epochs"])["jets_per_second"] for name, r in runs.items()}
    bare = bares[1][0]
    rate["bare"] = steady(bare["epochs"])["jets_per_second"]
    for n, together in bares.items():
        if n > 1:  # n bare processes at once: their summed throughput
            rate[f"bare_{n}x{per_rank}"] = sum(steady(b["epochs"])["jets_per_second"] for b in together)
    base = f"stack_1x{per_rank}"
    ranks = sorted(
        r["num_proc"] for name, r in runs.items() if name.startswith("stack_") and r["threads_per_rank"] == per_rank
    )
    efficiency = {n: rate[f"stack_{n}x{per_rank}"] / (n * rate[base]) for n in ranks if n > 1}
    threaded = f"stack_1x{threads}"
    flops_per_jet = bare["flops_per_step"] / bare["batch_size"]
    summary = {
        "steady_jets_per_second": {k: round(v, 2) for k, v in rate.items()},
        "overhead_vs_bare": round(1 - rate[base] / rate["bare"], 4),
        "cpu_ms_per_jet_per_process": {"bare": round(cpu_ms_per_jet(bare["epochs"]), 3)}
        | {f"bare_{n}x{per_rank}": round(cpu_ms_per_jet(b[0]["epochs"]), 3) for n, b in bares.items() if n > 1}
        | {name: round(cpu_ms_per_jet(r["epochs"], r["num_proc"]), 3) for name, r in runs.items()},
        "scaling_efficiency": {str(n): round(e, 4) for n, e in efficiency.items()},
        "bare_processes_scaling_efficiency": {
            str(n): round(rate[f"bare_{n}x{per_rank}"] / (n * rate["bare"]), 4) for n in bares if n > 1
        },
        "stack_vs_bare_processes": {
            str(n): round(rate[f"stack_{n}x{per_rank}"] / rate[f"bare_{n}x{per_rank}"], 4) for n in bares if n > 1
        },
        f"speedup_1_rank_{threads}_threads": round(rate[threaded] / rate[base], 3) if threaded != base else None,
        "model": {
            "flops_per_jet_training": round(flops_per_jet),
            "flops_counted_on": "the padded layout (every slot; the packed step does less of it)",
            "achieved_flops": {k: round(v * flops_per_jet) for k, v in rate.items()},
            "gemm_peak_flops_bare_threads": round(bare["gemm_peak_flops"]),
            "gemm_peak_flops_per_process_when_all_busy": {
                str(n): round(min(b["gemm_peak_flops"] for b in together)) for n, together in bares.items() if n > 1
            },
            "bare_fraction_of_gemm_peak": round(rate["bare"] * flops_per_jet / bare["gemm_peak_flops"], 4),
        },
        "startup_seconds": {"spark_session": round(spark_seconds, 2)}
        | {
            name: {
                "launch_to_ranks_ready": round(r["launch_seconds"], 2),
                "rank_setup": round(r["rank_setup_seconds"], 2),
                "first_epoch_extra": round(steady(r["epochs"])["first_epoch_extra_seconds"], 2),
            }
            for name, r in runs.items()
        },
    }
    barrier_base = f"barrier_1x{per_rank}"
    if barrier_base in rate:  # the barrier launcher on the same data: its own overhead and efficiency
        counts = sorted(r["num_proc"] for name, r in runs.items() if name.startswith("barrier_"))
        summary["barrier"] = {
            "overhead_vs_bare": round(1 - rate[barrier_base] / rate["bare"], 4),
            "scaling_efficiency": {
                str(n): round(rate[f"barrier_{n}x{per_rank}"] / (n * rate[barrier_base]), 4) for n in counts if n > 1
            },
            "vs_horovod": {
                str(n): round(rate[f"barrier_{n}x{per_rank}"] / rate[f"stack_{n}x{per_rank}"], 4)
                for n in counts
                if f"stack_{n}x{per_rank}" in rate
            },
        }
    targets = {"overhead_vs_bare_le_0.05": summary["overhead_vs_bare"] <= TARGETS["max_overhead_vs_bare"]}
    if 2 in efficiency:
        targets["scaling_efficiency_2_ranks_ge_0.92"] = efficiency[2] >= TARGETS["min_scaling_efficiency"]
    ranks_alike = f"stack_{threads // per_rank}x{per_rank}"
    if threaded != base and ranks_alike in rate:
        targets[f"{ranks_alike}_beats_{threaded}"] = rate[ranks_alike] > rate[threaded]
    summary["targets"] = targets
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "conf/scaling.yaml"))
    parser.add_argument("--data", help="dataset directory (default: generate the config's sample, reused)")
    parser.add_argument("--output", help="directory for scaling.json, scaling.png and the run directories")
    parser.add_argument("--ranks", default="1,2", help="rank counts to compare (default 1,2)")
    parser.add_argument("--threads-per-rank", type=int, default=1, help="TensorFlow threads of each rank (default 1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of the 1-rank run (all cores)")
    parser.add_argument("--launchers", default="horovod,barrier", help="launchers to compare (default both)")
    parser.add_argument("--bare-loop", nargs=2, metavar=("TRAIN_DIR", "THREADS"), help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    from scaling_plot import scaling_plot

    from ucluster_spark import config, store
    from ucluster_spark.driver.launchers.horovod import rank_environment

    overrides = [*args.overrides] + ([f"data.path={args.data}"] if args.data else [])
    cfg = config.load(args.config, overrides)
    if args.bare_loop:
        print(json.dumps(bare_loop(cfg, args.bare_loop[0], int(args.bare_loop[1]))))
        return

    from dataclasses import replace

    from ucluster_spark.data.sources import locate_or_generate
    from ucluster_spark.driver.session import get_session

    per_rank = args.threads_per_rank
    rank_counts = sorted({int(v) for v in args.ranks.split(",")} | {1})
    launchers = args.launchers.split(",")
    layouts = [(f"{LAYOUT_PREFIX[lau]}_{n}x{per_rank}", n, per_rank, lau) for lau in launchers for n in rank_counts]
    if args.threads != per_rank and "horovod" in launchers:
        layouts.append((f"stack_1x{args.threads}", 1, args.threads, "horovod"))
    output = Path(args.output or f"runs/scaling-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}").resolve()
    output.mkdir(parents=True, exist_ok=False)
    started = time.time()
    spark = get_session("ucluster-scaling")  # local[2], or the master spark-submit was given
    spark_seconds = time.time() - started
    try:
        root, info = locate_or_generate(spark, cfg.data)
        cfg = replace(cfg, data=replace(cfg.data, path=str(root)))
        print(
            f"[scaling] bare loop, {per_rank} thread(s), {info.n_jets('train')} training jets in memory",
            file=sys.stderr,
        )
        bare_args = (
            args.config,
            [*overrides, f"data.path={root}"],
            str(Path(root) / "train"),
            per_rank,
            rank_environment(cfg),
        )
        bares = {}
        for n in rank_counts:
            print(f"[scaling] {n} bare loop process(es) at once", file=sys.stderr, flush=True)
            bares[n] = run_bare(*bare_args, processes=n)
        runs = {}
        for name, ranks, threads, launcher_name in layouts:
            print(f"[scaling] {name}: {ranks} rank(s) x {threads} thread(s), {launcher_name}", file=sys.stderr)
            run_cfg = replace(
                cfg,
                train=replace(cfg.train, intra_op_threads=threads, inter_op_threads=threads),
                run=replace(cfg.run, num_proc=ranks, output=str(output / name), launcher=launcher_name),
            )
            runs[name] = run_stack(spark, run_cfg, output / name)
    finally:
        spark.stop()
    store.atomic_write_json(output / "raw.json", {"bare": {str(n): b for n, b in bares.items()}, "runs": runs})
    report = {
        "machine": machine(),
        "data": {"path": str(root), "train_jets": info.n_jets("train")},
        "batch_size_per_rank": cfg.train.batch_size,
        "threads_per_rank": per_rank,
        "epochs": cfg.train.epochs,
        "horovod_cycle_time_ms": cfg.run.horovod_cycle_time_ms,
        "bind_ranks_to_cores": cfg.run.bind_ranks_to_cores,
        "malloc_thresholds": cfg.run.malloc_thresholds,
        "summary": summarize(runs, bares, spark_seconds, per_rank, args.threads),
        "bare": {str(n): together for n, together in bares.items()},
        "runs": runs,
        "wall_seconds": time.time() - started,
    }
    store.atomic_write_json(output / "scaling.json", report)
    picture = output / "scaling.png"
    scaling_plot(report, picture)
    print(json.dumps(report["summary"], indent=2))
    print(f"[scaling] {output / 'scaling.json'}, {picture}", file=sys.stderr)


if __name__ == "__main__":
    main()
