"""Data-layer throughput: generation, preparation, storage, and the reader against the training step.

    .venv/bin/python benchmarks/data_throughput.py [--jets-per-class 300] [--hls4ml-jets 40000] [--work DIR]
    .venv/bin/python benchmarks/data_throughput.py --formats 100000 [--work DIR]

Prints one JSON document. ``--formats N`` times only the preparation job on N jets of each file layout the prepare
job reads (hls4ml HDF5 in files of 10,000 jets; JetClass ROOT in one file), side by side.

The reader must deliver >= 5x what one training step consumes per rank, so that
data loading never starves a rank; the ratio is printed as ``reader_over_training``. The checksum check that every
training and assignment job runs first is timed on the prepared dataset (``checksum_share_of_an_epoch_2_ranks``:
its cost in epochs of 2-rank training).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: its tests/sample_files write the inputs

ROOT = Path(__file__).resolve().parents[1]


def generation_per_core(classes: list[str], jets: int) -> dict[str, float]:
    """Jets/s of one Pythia + FastJet stream per class, in this process (one core)."""
    import pandas as pd

    from ucluster_spark.data.simulate import generate_jets, plan_tasks

    rates = {}
    for task in plan_tasks(classes, jets, 1, base_seed=11):
        start = time.perf_counter()
        n = len(pd.concat(generate_jets(task, 100, "ucluster8", progress_every=1e9)))
        rates[task.class_name] = n / (time.perf_counter() - start)
    return rates


def spark_generation(spark, work: Path, classes: list[str], jets: int) -> dict[str, float]:
    from ucluster_spark import config
    from ucluster_spark.data.sources import generate

    cfg = config.load(
        None,
        [
            f"data.classes=[{','.join(classes)}]",
            f"data.jets_per_class={jets}",
            "data.tasks_per_class=2",
            "data.generation_seed=12",
        ],
    )
    start = time.perf_counter()
    info = generate(spark, cfg.data, work / "generated")
    seconds = time.perf_counter() - start
    total = sum(info.n_jets(s) for s in ("train", "val", "test"))
    cores = spark.sparkContext.defaultParallelism
    return {
        "jets": total,
        "seconds": seconds,
        "jets_per_s": total / seconds,
        "cores": cores,
        "jets_per_s_per_core": total / seconds / cores,
    }


def write_inputs(work: Path, n_jets: int, input_format: str) -> str:
    """Files of made-up jets in ``input_format``'s layout under ``work``; returns their glob."""
    folder = work / input_format
    folder.mkdir()
    if input_format == "hls4ml":
        from tests.sample_files.hls4ml import jet_values, write_file

        for i in range(max(1, n_jets // 10_000)):
            write_file(folder / f"jets_{i}.h5", jet_values(10_000, seed=i))
        return str(folder / "*.h5")
    from tests.sample_files.jetclass import jetclass_values, write_file

    write_file(folder / "jets.root", jetclass_values(n_jets, seed=0, max_particles=100))
    return str(folder / "*.root")


def preparation(spark, work: Path, n_jets: int, input_format: str = "hls4ml") -> tuple[dict[str, float], Path]:
    """The prepare job on ``n_jets`` jets of one layout (their writing not timed)."""
    from ucluster_spark import config
    from ucluster_spark.data.sources import prepare

    pattern = write_inputs(work, n_jets, input_format)
    classes = "g,q,w,z,t" if input_format == "hls4ml" else "w,z,t"
    cfg = config.load(None, [f"data.classes=[{classes}]", "data.files_per_split=4"])
    output = work / f"prepared-{input_format}"
    start = time.perf_counter()
    info = prepare(spark, input_format, pattern, output, cfg.data)
    seconds = time.perf_counter() - start
    total = sum(info.n_jets(s) for s in ("train", "val", "test"))
    parquet_bytes = sum(f.stat().st_size for f in output.rglob("*.parquet"))
    cores = spark.sparkContext.defaultParallelism
    return {
        "jets": total,
        "seconds": seconds,
        "jets_per_s": total / seconds,
        "cores": cores,
        "jets_per_s_per_core": total / seconds / cores,
        "parquet_bytes_per_jet": parquet_bytes / total,
    }, output


def checksum_rate(spark, root: Path) -> dict[str, float]:
    """What the check before every training and assignment job costs: every file's CRC-32 against the dataset's
    metadata, in Spark tasks (``dataset.verify_checksums``)."""
    from ucluster_spark.data.dataset import load_info, verify_checksums

    info = load_info(root)
    size = sum(f.stat().st_size for f in root.rglob("*.parquet"))
    jets = sum(info.n_jets(s) for s in ("train", "val", "test"))
    start = time.perf_counter()
    verify_checksums(spark, root, info)
    seconds = time.perf_counter() - start
    return {"bytes": size, "jets": jets, "seconds": seconds, "mb_per_s": size / 2**20 / seconds,
            "jets_per_s": jets / seconds}  # fmt: skip


def reader_rate(root: Path, batch_size: int, batches: int) -> float:
    """Jets/s of rank 0 of 2 through the training pipeline (petastorm -> tf.data, shuffled, batched)."""
    from ucluster_spark.executor.reader import training_batches

    with training_batches(
        (root / "train").as_uri(),
        shard=0,
        shard_count=2,
        max_constituents=100,
        n_features=8,
        batch_sizes=[batch_size],
        shuffle_buffer=2048,
        seed=0,
        num_epochs=None,
    ) as ds:
        it = iter(ds)
        next(it)  # warm-up: reader threads started, first row group decoded
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        return batches * batch_size / (time.perf_counter() - start)


def training_step_rate(batch_size: int, steps: int) -> float:
    """Jets/s of one training step of the default model on one TensorFlow thread (what one rank consumes): the
    step and batch of benchmarks/step_speed.py."""
    from step_speed import rank_step  # first: it sets the runtime environment before TensorFlow

    import tensorflow as tf  # isort: skip

    step, batch = rank_step(batch_size, [])
    weight = tf.constant(1.0)
    step(batch, weight)
    start = time.perf_counter()
    for _ in range(steps):
        step(batch, weight)[0].numpy()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jets-per-class", type=int, default=300)
    parser.add_argument("--hls4ml-jets", type=int, default=40_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--work", type=Path, help="scratch directory (default: a temporary one)")
    parser.add_argument("--formats", type=int, metavar="N", help="only the preparation of N jets of each layout")
    args = parser.parse_args()
    if args.formats:
        return compare_formats(args.formats, args.work)

    import tensorflow as tf

    from ucluster_spark.driver.session import get_session

    # One TensorFlow thread, as each rank runs (train.intra_op_threads); must precede any TensorFlow work.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="ucluster-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    classes = ["w", "z", "t"]
    results: dict[str, object] = {"work": str(work)}
    print("[bench] Pythia per core ...", file=sys.stderr, flush=True)
    results["generation_per_core_jets_per_s"] = generation_per_core(classes, max(50, args.jets_per_class // 3))
    spark = get_session("ucluster-bench-data")
    try:
        print("[bench] Pythia inside Spark ...", file=sys.stderr, flush=True)
        results["generation_spark"] = spark_generation(spark, work, classes, args.jets_per_class)
        print("[bench] hls4ml preparation ...", file=sys.stderr, flush=True)
        results["preparation"], prepared = preparation(spark, work, args.hls4ml_jets, "hls4ml")
        print("[bench] checksum verification ...", file=sys.stderr, flush=True)
        results["checksum_verification"] = checksum_rate(spark, prepared)
    finally:
        spark.stop()
    print("[bench] reader and training step ...", file=sys.stderr, flush=True)
    reader = reader_rate(prepared, args.batch_size, batches=60)
    training = training_step_rate(args.batch_size, steps=8)
    results["reader_jets_per_s_per_rank"] = reader
    results["training_step_jets_per_s_one_thread"] = training
    results["reader_over_training"] = reader / training
    results["target_reader_over_training"] = 5.0
    # One check before each job against the epochs of training it precedes (2 ranks): the share of one epoch.
    results["checksum_share_of_an_epoch_2_ranks"] = 2 * training / results["checksum_verification"]["jets_per_s"]
    print(json.dumps(results, indent=2))


def compare_formats(n_jets: int, work: Path | None) -> None:
    from ucluster_spark.driver.session import get_session

    work = work or Path(tempfile.mkdtemp(prefix="ucluster-bench-"))
    (work / "warm-up").mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {"command": "benchmarks/data_throughput.py --formats " + str(n_jets)}
    spark = get_session("ucluster-bench-formats")
    try:
        for input_format in ("hls4ml", "jetclass"):  # untimed first: Spark's and the Python workers' start-up
            preparation(spark, work / "warm-up", 2_000, input_format)
        for input_format in ("hls4ml", "jetclass"):
            print(f"[bench] {input_format} preparation ...", file=sys.stderr, flush=True)
            results[input_format], _ = preparation(spark, work, n_jets, input_format)
    finally:
        spark.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
