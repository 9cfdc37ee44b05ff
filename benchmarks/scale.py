"""Cost and memory against dataset size: does a job's time grow linearly and its memory not at all?

    .venv/bin/python benchmarks/scale.py --source DATASET_DIR [--factors 1,14,143] [--evaluate-up-to 400000]
                                         [--output DIR] [--config conf/scale.yaml]

DATASET_DIR is a real generated sample (e.g. 30k Pythia jets). Each larger size is that sample's training split
copied FACTOR times under new jet ids by a Spark job (``benchmarks/replicate.py``; validation and test
splits unchanged, so per-epoch and final measurements stay bounded): the bytes, row groups and jet count of a
large dataset, not new physics. For every size, through the real jobs under spark-submit (local[2]):

- prepare: the replication job's jets/s and bytes (size 1: the source as generated; a small Pythia generation
  measures generation throughput once);
- train (``conf/scale.yaml``: 2 ranks, ``train.steps_per_epoch`` fixed, per-epoch validation on a fixed subset):
  every rank's peak RSS (reported by the ranks), the driver's (Python and JVM, sampled), steady jets/s, the time
  between epochs (validation, checkpoint, k-means start) and the k-means start's time;
- evaluate (sizes up to ``--evaluate-up-to`` jets): jets/s per core, executor and driver peak RSS (sampled);
- k-means start alone, in one process, on as many synthetic embeddings as each size's training split: the
  bounded sample's time and peak memory (a whole pass over a big dataset is what a run without
  ``train.steps_per_epoch`` feeds it).

Prints ratios against the smallest size (targets: memory within 10 %, time per jet within 10 %), writes
``scale.json`` and ``scale.png`` to ``--output`` (default runs/scale). Resumable: finished steps are kept in
``--output``/steps/ and not run again. Run it alone on the machine: it measures time and memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPARK_SUBMIT = Path(sys.executable).with_name("spark-submit")
TOLERANCE = 0.10
JVM_WARM_UP_SECONDS = 60.0
"""A JVM's resident size grows over its first minute whatever it reads (heap sizing, compiled code, buffers)."""


# ---- memory of a process tree, by role ---------------------------------------------------------------------------


def role_of(process) -> str:
    """What a process under spark-submit is: a training rank, the driver's JVM or Python, or a Python worker."""
    try:
        environ = process.environ()
        if "HOROVOD_RANK" in environ or "UCLUSTER_RANK" in environ:
            return "rank"
        if process.name() == "java":
            return "jvm"
        command = " ".join(process.cmdline())
    except Exception:  # gone, or not ours to read
        return "other"
    if "pyspark.daemon" in command or "pyspark.worker" in command or "pyspark/daemon" in command:
        return "python_worker"
    if "jobs/" in command or "scale.py" in command:
        return "driver_python"
    return "other"


class PeakMemory:
    """Samples the RSS of a process and its descendants every ``interval`` seconds: per role, the largest single
    process's peak and the peak of their sum, and a timeline (the largest process per role in each ``window``
    seconds) that shows whether memory levels off or keeps growing as the job goes through the data."""

    def __init__(self, pid: int, interval: float = 0.25, window: float = 10.0) -> None:
        import psutil

        self._root, self._interval, self._psutil = psutil.Process(pid), interval, psutil
        self._roles: dict[tuple[int, str], str] = {}
        self.largest: dict[str, float] = {}
        self.total: dict[str, float] = {}
        self._started, self._window = time.time(), window
        self.timeline: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            sums: dict[str, float] = {}
            try:
                processes = [self._root, *self._root.children(recursive=True)]
            except self._psutil.Error:
                return
            for process in processes:
                try:
                    rss = process.memory_info().rss / 2**20
                    key = (process.pid, process.name())  # the name changes when spark-submit's script execs java
                except self._psutil.Error:
                    continue
                role = self._roles.get(key) or self._roles.setdefault(key, role_of(process))
                self.largest[role] = max(self.largest.get(role, 0.0), rss)
                self._in_window(role, rss)
                sums[role] = sums.get(role, 0.0) + rss
            for role, value in sums.items():
                self.total[role] = max(self.total.get(role, 0.0), value)
            self._stop.wait(self._interval)

    def _in_window(self, role: str, rss: float) -> None:
        start = round((time.time() - self._started) // self._window * self._window, 1)
        if not self.timeline or self.timeline[-1]["seconds"] != start:
            self.timeline.append({"seconds": start})
        self.timeline[-1][role] = round(max(self.timeline[-1].get(role, 0.0), rss), 1)

    def report(self) -> dict[str, Any]:
        return {
            "largest_process_mb": {k: round(v, 1) for k, v in sorted(self.largest.items())},
            "sum_mb": {k: round(v, 1) for k, v in sorted(self.total.items())},
            "timeline_mb": self.timeline,
        }


def submit(args: list[str], log_path: Path, driver_memory: str = "2g") -> dict[str, Any]:
    """spark-submit ARGS (local[2]) with its tree's memory sampled; output to ``log_path``; fails loudly. The JVM
    starts with two malloc arenas, as under the Makefile (ucluster_spark/_env.py ARENA_ENV;
    docs/benchmarks/large-datasets.md)."""
    env = {"MALLOC_ARENA_MAX": "2", **os.environ}
    env.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    started = time.time()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(SPARK_SUBMIT), "--master", "local[2]", "--driver-memory", driver_memory, *args],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip
        with PeakMemory(process.pid) as memory:
            code = process.wait()
    if code != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed with exit code {code}; see {log_path}")
    return {"seconds": round(time.time() - started, 2), "memory": memory.report()}


def cached(steps: Path, name: str, run) -> dict[str, Any]:
    """A step's result from ``steps/NAME.json``, or run it and keep its result there (resumable)."""
    path = steps / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    print(f"[scale] {name} ...", flush=True)
    result = run()
    path.write_text(json.dumps(result, indent=2))
    print(f"[scale] {name}: {json.dumps(result)[:400]}", flush=True)
    return result


# ---- the steps ---------------------------------------------------------------------------------------------------


def replicate_step(source: str, output: str, factor: int) -> None:
    """Inside spark-submit: the replication job (its result as the last stdout line)."""
    from replicate import replicate_training_split

    from ucluster_spark.driver.session import get_session, stop

    spark = get_session("ucluster-replicate")
    try:
        print(json.dumps(replicate_training_split(spark, source, output, factor, overwrite=True)))
    finally:
        stop(spark)


def generation_step(out: Path) -> dict[str, Any]:
    """Pythia + FastJet generation throughput on a small sample (2 tasks per class on 2 cores)."""
    target = out / "generated"
    run = submit(["jobs/generate.py", "--classes", "w,z,t", "--jets-per-class", "400", "--tasks-per-class", "2",
                  "--seed", "5", "--output", str(target), "--overwrite"], out / "generate.log")  # fmt: skip
    info = json.loads((target / "_ucluster_dataset.json").read_text())
    jets = sum(sum(c.values()) for c in info["counts"].values())
    return {**run, "jets": jets, "jets_per_second": round(jets / run["seconds"], 1), "note": "whole job incl. start-up"}


def train_step(out: Path, data: str, config: str, name: str, overrides: list[str]) -> dict[str, Any]:
    run_dir = out / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)  # what an interrupted earlier attempt left
    run = submit(["jobs/train.py", "--config", config, "--data", data, "--output", str(run_dir), *overrides],
                 out / f"train-{name}.log")  # fmt: skip
    history = json.loads((run_dir / "history.json").read_text())
    later = history[1:] or history
    gaps = [b["started_at"] - (a["started_at"] + a["seconds"]) for a, b in zip(history, history[1:], strict=False)]
    return {
        **run,
        "run_dir": str(run_dir),
        "steady_jets_per_second": round(sum(r["jets_per_second"] for r in later) / len(later), 2),
        "jets_per_epoch": round(history[-1]["jets_per_second"] * history[-1]["seconds"]),
        "epoch_seconds": [round(r["seconds"], 2) for r in history],
        "between_epochs_seconds": [round(g, 2) for g in gaps],
        "kmeans_seconds": round(next(r["kmeans_seconds"] for r in history if "kmeans_seconds" in r), 3),
        "rank_peak_rss_mb": history[-1]["peak_rss_mb"],
    }


def evaluate_step(out: Path, run_dir: str, data: str, name: str, driver_memory: str = "2g") -> dict[str, Any]:
    """The evaluate job on every split of ``data``; ``driver_memory`` is the local JVM's heap (driver + executor)."""
    target = out / "evaluations" / name
    run = submit(["jobs/evaluate.py", "--model", run_dir, "--data", data, "--output", str(target), "--overwrite"],
                 out / f"evaluate-{name}.log", driver_memory)  # fmt: skip
    metrics = json.loads((target / "metrics.json").read_text())
    return {**run, "driver_memory": driver_memory, "n_jets": metrics["n_jets"], "throughput": metrics["throughput"]}


KMEANS_PROBE = """
import json, resource, sys, time
import numpy as np
from sklearn.cluster import KMeans
from ucluster_spark.config import TrainConfig
from ucluster_spark.executor.centroids import BoundedSample, sample_for_kmeans
from ucluster_spark.executor.rank.collectives import LocalCollectives

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

rows, batch, t = int(sys.argv[1]), 512, TrainConfig()
rng = np.random.default_rng(0)
candidates, before = BoundedSample(t.kmeans_max_jets, t.seed, 3), peak()
started = time.time()
for start in range(0, rows, batch):  # as the last pre-training epoch feeds it, batch by batch
    candidates.add(rng.normal(size=(min(batch, rows - start), 3)).astype(np.float32))
sample = sample_for_kmeans(candidates, LocalCollectives())
sampled = time.time()
KMeans(n_clusters=3, n_init=10, random_state=t.seed).fit(sample)
print(json.dumps({"rows": rows, "sample": len(sample), "sampling_seconds": round(sampled - started, 3),
                  "kmeans_seconds": round(time.time() - sampled, 3), "peak_rss_growth_mb": round(peak() - before, 1)}))
"""


def kmeans_step(rows: int) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-c", KMEANS_PROBE, str(rows)], capture_output=True, text=True,
                            cwd=ROOT, check=True)  # fmt: skip
    return json.loads(result.stdout.splitlines()[-1])


# ---- summary -----------------------------------------------------------------------------------------------------


def ratios(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """The largest size against the smallest (1.0 = flat). Targets: memory and time per jet grow by at most 10 %.
    Evaluation's time per jet is its marginal cost (extra seconds per extra jet between consecutive sizes), as its
    fixed start-up (tasks, model loads) is a large part of the smallest size's run; the k-means start's memory is
    compared from the first size above its sample limit (below it the sample is the whole split). The evaluate
    JVM's is also compared from the first evaluation that outlasts its warm-up, and within the largest evaluation:
    the peak over its second half against the peak over its first (growth as the data streams through)."""
    small, large = sizes[0], sizes[-1]
    evaluated = [s for s in sizes if "evaluate" in s]

    def ratio(get, first=small, last=large) -> float | None:
        try:
            return round(get(last) / get(first), 4)
        except (KeyError, TypeError, ZeroDivisionError):
            return None

    def largest(step: str, role: str):
        return lambda s: s[step]["memory"]["largest_process_mb"][role]

    limited = next((s for s in sizes if s["kmeans"]["sample"] < s["kmeans"]["rows"]), small)
    found = {
        "train_rank_peak_rss": ratio(lambda s: max(s["train"]["rank_peak_rss_mb"])),
        "train_driver_python_peak_rss": ratio(largest("train", "driver_python")),
        "train_driver_jvm_peak_rss": ratio(largest("train", "jvm")),
        "train_seconds_per_jet": ratio(lambda s: 1 / s["train"]["steady_jets_per_second"]),
        "train_seconds_between_epochs": ratio(lambda s: sum(s["train"]["between_epochs_seconds"])),
        "kmeans_start_peak_rss_growth": ratio(lambda s: s["kmeans"]["peak_rss_growth_mb"], limited),
        "kmeans_sampling_seconds_per_jet": ratio(lambda s: s["kmeans"]["sampling_seconds"] / s["kmeans"]["rows"]),
    }
    marginal = [
        round((b["evaluate"]["n_jets"] - a["evaluate"]["n_jets"]) / (b["evaluate"]["throughput"]["assignment_seconds"]
              - a["evaluate"]["throughput"]["assignment_seconds"]) / b["evaluate"]["throughput"]["cores"], 1)
        for a, b in zip(evaluated, evaluated[1:], strict=False)
    ]  # fmt: skip
    if len(marginal) > 1:
        found["evaluate_marginal_seconds_per_jet"] = round(marginal[0] / marginal[-1], 4)
    if len(evaluated) > 1:
        for role in ("python_worker", "driver_python", "jvm"):
            found[f"evaluate_{role}_peak_rss"] = ratio(largest("evaluate", role), evaluated[0], evaluated[-1])
    warm = next((s for s in evaluated if s["evaluate"]["seconds"] >= JVM_WARM_UP_SECONDS), None)
    if warm is not None and warm is not evaluated[-1]:
        found["evaluate_jvm_peak_rss_after_warm_up"] = ratio(largest("evaluate", "jvm"), warm, evaluated[-1])
    timeline = evaluated[-1]["evaluate"]["memory"].get("timeline_mb") if evaluated else None
    if timeline:
        half = timeline[-1]["seconds"] / 2
        first, second = (max(t.get("jvm", 0.0) for t in timeline if (t["seconds"] >= half) == later)
                         for later in (False, True))  # fmt: skip
        found["evaluate_jvm_rss_second_half_of_run"] = round(second / first, 4)
    return {
        "compared": {"train": [small["train_jets"], large["train_jets"]],
                     "evaluate": [s["jets"] for s in evaluated], "kmeans_memory_from": limited["train_jets"],
                     "evaluate_jvm_after_warm_up_from": warm["jets"] if warm else None},
        "ratios": found,
        "evaluate_jets_per_second_per_core": [e["evaluate"]["throughput"]["jets_per_second_per_core"]
                                              for e in evaluated],
        "evaluate_marginal_jets_per_second_per_core": marginal,
        "at_most_10_percent_more": {k: v is not None and v <= 1 + TOLERANCE for k, v in found.items()},
    }  # fmt: skip


def docs_table(report: dict[str, Any]) -> str:
    """The table of docs/benchmarks/large-datasets.md of a results file (a test checks the page holds it)."""
    head = (
        "| training jets | train split on disk | prepared at | training (2 ranks) | peak RSS, rank 0 / 1 | "
        "driver peak RSS (Python / JVM) | between epochs (2 gaps) | k-means start in the run / on every jet | "
        "evaluate (all splits) | evaluate peak RSS (worker / JVM) |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for size in report["sizes"]:
        train, kmeans = size["train"], size["kmeans"]
        prepare = size.get("prepare")
        prepared = f"{prepare['jets_per_second']:,.0f} jets/s (copies)" if prepare else "generated (Pythia)"
        disk = f"{prepare['train_bytes'] / 1e9:.2f} GB" if prepare else "—"
        memory = train["memory"]["largest_process_mb"]
        evaluate = size.get("evaluate")
        evaluated = (
            (f"{evaluate['n_jets']:,} jets, {evaluate['throughput']['jets_per_second_per_core']:.0f} jets/s per core",
             f"{evaluate['memory']['largest_process_mb']['python_worker']:,.0f} / "
             f"{evaluate['memory']['largest_process_mb']['jvm']:,.0f} MB")
            if evaluate else ("not run", "—")
        )  # fmt: skip
        rows.append(
            f"| {size['train_jets']:,} | {disk} | {prepared} | {train['steady_jets_per_second']:.0f} jets/s | "
            f"{' / '.join(f'{v:,.0f}' for v in train['rank_peak_rss_mb'])} MB | "
            f"{memory['driver_python']:,.0f} / {memory['jvm']:,.0f} MB | "
            f"{sum(train['between_epochs_seconds']):.1f} s | "
            f"{train['kmeans_seconds']:.2f} s / {kmeans['sampling_seconds'] + kmeans['kmeans_seconds']:.2f} s "
            f"(+{kmeans['peak_rss_growth_mb']:.0f} MB) | {evaluated[0]} | {evaluated[1]} |"
        )
    return "\n".join([head, *rows])


def draw(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = report["sizes"]
    jets = [s["train_jets"] for s in sizes]
    evaluated = [s for s in sizes if "evaluate" in s]
    over_time = [s for s in evaluated if s["evaluate"]["memory"].get("timeline_mb")]
    fig, panels = plt.subplots(1, 3 if over_time else 2, figsize=(16 if over_time else 11, 4.2))
    memory, cost = panels[:2]
    memory.plot(jets, [max(s["train"]["rank_peak_rss_mb"]) for s in sizes], "o-", label="training rank (peak)")
    memory.plot(jets, [s["train"]["memory"]["largest_process_mb"]["driver_python"] for s in sizes], "s-",
                label="training driver, Python")  # fmt: skip
    memory.plot(jets, [s["train"]["memory"]["largest_process_mb"]["jvm"] for s in sizes], "^-",
                label="training driver, JVM (local mode: also the executor)")  # fmt: skip
    if evaluated:
        memory.plot([s["train_jets"] for s in evaluated],
                    [s["evaluate"]["memory"]["largest_process_mb"]["python_worker"] for s in evaluated], "d-",
                    label="evaluate, executor Python worker")  # fmt: skip
        memory.plot([s["train_jets"] for s in evaluated],
                    [s["evaluate"]["memory"]["largest_process_mb"]["jvm"] for s in evaluated], "v--",
                    label="evaluate, JVM (driver and executor, --driver-memory 2g)")  # fmt: skip
    memory.set(xscale="log", xlabel="training jets", ylabel="peak RSS (MB)", title="memory", ylim=(0, None))
    memory.legend(fontsize=7)
    cost.plot(jets, [1e3 / s["train"]["steady_jets_per_second"] for s in sizes], "o-",
              label="training, ms per jet (2 ranks)")  # fmt: skip
    if evaluated:
        cost.plot([s["train_jets"] for s in evaluated],
                  [1e3 / s["evaluate"]["throughput"]["jets_per_second_per_core"] for s in evaluated], "d-",
                  label="evaluate, core-ms per jet")  # fmt: skip
    cost.plot(jets, [1e6 * s["kmeans"]["sampling_seconds"] / s["kmeans"]["rows"] for s in sizes], "s--",
              label="k-means sample, us per embedding")  # fmt: skip
    cost.set(xscale="log", xlabel="training jets", ylabel="time per jet", title="time per jet", ylim=(0, None))
    cost.legend(fontsize=7)
    if over_time:
        during = panels[2]
        for size, style in zip(over_time, ("-", "--", ":", "-."), strict=False):
            timeline = size["evaluate"]["memory"]["timeline_mb"]
            minutes = [t["seconds"] / 60 for t in timeline]
            for role, colour in (("jvm", "tab:purple"), ("python_worker", "tab:red")):
                during.plot(minutes, [t.get(role, float("nan")) for t in timeline], style, color=colour,
                            label=f"{size['evaluate']['n_jets']:,} jets, {role.replace('_', ' ')}")  # fmt: skip
        during.set(xlabel="minutes into the evaluate job", ylabel="RSS, largest process (MB, 10 s maxima)",
                   title="evaluate: memory during the run", ylim=(0, None))  # fmt: skip
        during.legend(fontsize=7)
    fig.suptitle(f"larger sizes: copies of a {sizes[0]['train_jets']:,}-jet Pythia training split "
                 "(benchmarks/scale.py; 2 cores, local[2])", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="a generated dataset directory (the real sample)")
    parser.add_argument("--factors", default="1,14,143", help="copies of the training split per size")
    parser.add_argument("--evaluate-up-to", type=int, default=400_000, help="evaluate sizes up to this many jets")
    parser.add_argument("--config", default=str(ROOT / "conf/scale.yaml"))
    parser.add_argument("--output", default=str(ROOT / "runs/scale"))
    parser.add_argument("overrides", nargs="*", help="config overrides for the training runs (section.key=value)")
    parser.add_argument("--table", metavar="RESULTS_JSON", help="print the docs' table of a results file")
    parser.add_argument("--plot", metavar="RESULTS_JSON", help="draw a results file's PNG again, beside it")
    parser.add_argument("--replicate", nargs=3, metavar=("SOURCE", "OUTPUT", "FACTOR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replicate:
        replicate_step(args.replicate[0], args.replicate[1], int(args.replicate[2]))
        return
    if args.table:
        print(docs_table(json.loads(Path(args.table).read_text())))
        return
    if args.plot:
        draw(json.loads(Path(args.plot).read_text()), Path(args.plot).with_suffix(".png"))
        return
    if not args.source:
        parser.error("--source DATASET_DIR is required")

    out = Path(args.output).resolve()
    steps = out / "steps"
    steps.mkdir(parents=True, exist_ok=True)
    source = Path(args.source).resolve()
    source_info = json.loads((source / "_ucluster_dataset.json").read_text())
    n_train = sum(source_info["counts"]["train"].values())
    bounded = sum(sum(source_info["counts"][s].values()) for s in ("val", "test"))
    report: dict[str, Any] = {
        "source": str(source),
        "source_generator": source_info["source"].get("generator"),
        "note": "sizes above factor 1 copy the source's training split under new jet ids (a Spark job); "
        "validation and test splits are the source's at every size",
        "config": args.config,
        "overrides": args.overrides,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "generation": cached(steps, "generate", lambda: generation_step(out)),
        "sizes": [],
    }
    for factor in [int(f) for f in args.factors.split(",")]:
        name = f"x{factor}"
        data = str(source)
        entry: dict[str, Any] = {"factor": factor, "train_jets": n_train * factor, "jets": n_train * factor + bounded}
        if factor > 1:
            data = str(out / "data" / name)

            def replicate(factor=factor, data=data, name=name) -> dict[str, Any]:
                run = submit([str(Path(__file__).resolve()), "--replicate", str(source), data, str(factor)],
                             out / f"replicate-{name}.log")  # fmt: skip
                last = (out / f"replicate-{name}.log").read_text().strip().splitlines()[-1]
                return {**run, **json.loads(last)}

            entry["prepare"] = cached(steps, f"replicate-{name}", replicate)
        entry["train"] = cached(
            steps, f"train-{name}", lambda d=data, n=name: train_step(out, d, args.config, n, args.overrides)
        )
        if entry["jets"] <= args.evaluate_up_to:
            run_dir = entry["train"]["run_dir"]
            entry["evaluate"] = cached(steps, f"evaluate-{name}", lambda r=run_dir, d=data, n=name:
                                       evaluate_step(out, r, d, n))  # fmt: skip
        entry["kmeans"] = cached(steps, f"kmeans-{name}", lambda rows=entry["train_jets"]: kmeans_step(rows))
        report["sizes"].append(entry)
    report["summary"] = ratios(report["sizes"])
    (out / "scale.json").write_text(json.dumps(report, indent=2))
    draw(report, out / "scale.png")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
