"""Speed of one rank's training step: the particle layouts of the model, and process settings (glibc malloc
thresholds, XLA, oneDNN), optionally against the step of an earlier commit.

    .venv/bin/python benchmarks/step_speed.py [--steps 16] [--repeats 3] [--baseline REV] [--output FILE.json]

Each variant runs in its own fresh process (malloc settings act only at process start), in turns (A B C A B C ...)
so that drifts of a noisy machine fall on every variant alike. Every process builds the default model with the same
seed and runs the same training step (clustering loss on, batch-norm momentum schedule, no Horovod, one thread) on
the same batch of 128 synthetic jets of 20 to 99 particles, and reports jets/s, user and system CPU seconds, minor
page faults and the losses after the timed steps, so a variant that changes the numbers is visible. ``--baseline
REV`` adds the variant ``before``: this benchmark's step as commit REV ran it (checked out into a temporary git
worktree), first, so every ``speed_vs_before`` is a before/after ratio on this machine. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from provenance import checked_out, publish, run_child

from ucluster_spark import _env  # the runtime environment and its malloc settings; imports no TensorFlow

ROOT = Path(__file__).resolve().parents[1]
PADDED = ["model.particle_layout=padded"]
VARIANTS: dict[str, dict] = {  # the default: the project's runtime environment (ucluster_spark/_env.py), packed rows
    "packed": {"env": {}, "jit": False, "overrides": []},
    "padded": {"env": {}, "jit": False, "overrides": PADDED},
    "packed_xla": {"env": {}, "jit": True, "overrides": []},
    "padded_xla": {"env": {}, "jit": True, "overrides": PADDED},
    "packed_onednn_off": {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "jit": False, "overrides": []},
    "packed_glibc_default": {"env": {key: None for key in _env.MALLOC_ENV}, "jit": False, "overrides": []},
}
BASELINE = "before"


def rank_step(batch_size: int, overrides: list[str]):
    """The step of one rank as the training loop builds it (default model and seed, clustering loss on, batch-norm
    schedule, one thread, no Horovod) and the benchmark's batch: ``batch_size`` synthetic jets of 20 to 99
    particles. Returns (step, batch)."""
    import numpy as np

    import tensorflow as tf  # isort: skip

    from ucluster_spark import config
    from ucluster_spark.executor.model import build_model
    from ucluster_spark.executor.rank.environment import configure_threads
    from ucluster_spark.executor.rank.step import make_batch_norm_schedule, make_optimizer, make_train_step
    from ucluster_spark.schema import CONSTITUENTS, MASS

    cfg = config.load(None, overrides)
    configure_threads(cfg.train)
    tf.keras.utils.set_random_seed(cfg.train.seed)
    model = build_model(cfg)
    _, optimizer = make_optimizer(cfg, model, workers=1, steps_per_epoch=100)
    bn_momentum = make_batch_norm_schedule(cfg, model, 100)
    alpha, beta = tf.Variable(cfg.loss.alpha_start), tf.Variable(cfg.loss.clustering_weight)
    step = make_train_step(model, optimizer, cfg, alpha, beta, bn_momentum=bn_momentum)
    rng = np.random.default_rng(0)
    x = np.zeros((batch_size, cfg.data.max_constituents, 8), np.float32)
    for i, n in enumerate(rng.integers(20, cfg.data.max_constituents, batch_size)):
        x[i, :n] = rng.normal(size=(n, 8))
    batch = {CONSTITUENTS: tf.constant(x), MASS: tf.constant(rng.uniform(0, 250, batch_size).astype(np.float32))}
    return step, batch


def one_process(jit: bool, steps: int, batch_size: int, overrides: list[str]) -> dict:
    """Runs inside the child: time ``steps`` training steps after one warm-up step."""
    import tensorflow as tf

    step, batch = rank_step(batch_size, overrides)
    if jit:
        step = tf.function(step.python_function, jit_compile=True)
    weight = tf.constant(1.0)
    started = time.perf_counter()
    step(batch, weight)[0].numpy()  # tracing (and XLA compilation)
    first_step = time.perf_counter() - started
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        losses = step(batch, weight)[0].numpy()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "jets_per_second": steps * batch_size / seconds,
        "user_seconds": after.ru_utime - before.ru_utime,
        "system_seconds": after.ru_stime - before.ru_stime,
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "first_step_seconds": first_step,
        "losses_after": [round(float(v), 5) for v in losses],
    }


def run_variant(name: str, steps: int, batch_size: int, baseline: Path | None) -> dict:
    """One fresh process; the baseline runs its own commit's copy of this benchmark, which takes no overrides."""
    variant = VARIANTS.get(name, {"env": {}, "jit": False, "overrides": []})
    env = {**_env.MALLOC_ENV, **os.environ}
    for key, value in variant["env"].items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    root = baseline if name == BASELINE else ROOT
    command = [sys.executable, str(root / "benchmarks" / "step_speed.py"), "--child", "1" if variant["jit"] else "0"]
    command += [str(steps), str(batch_size)]
    if variant["overrides"]:
        command += ["--override", *variant["overrides"]]
    return run_child(f"step_speed: variant {name}", command, env, root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--baseline", metavar="REV", help="also time the step of this git revision, first")
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--override", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        jit, steps, batch_size = args.child
        print(json.dumps(one_process(jit == "1", int(steps), int(batch_size), args.override)))
        return

    names = args.variants.split(",")
    if unknown := [name for name in names if name not in VARIANTS]:
        parser.error(f"unknown variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    if args.baseline:
        names.insert(0, BASELINE)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with checked_out(args.baseline) as baseline:
        for repeat in range(args.repeats):
            for name in names:
                runs[name].append(run_variant(name, args.steps, args.batch_size, baseline))
                print(f"[step_speed] repeat {repeat + 1}/{args.repeats} {name}: "
                      f"{runs[name][-1]['jets_per_second']:.1f} jets/s", file=sys.stderr)  # fmt: skip
    summary = {
        name: {
            "median_jets_per_second": statistics.median(r["jets_per_second"] for r in results),
            "median_system_seconds": statistics.median(r["system_seconds"] for r in results),
            "median_minor_faults": statistics.median(r["minor_faults"] for r in results),
            "losses_after": results[0]["losses_after"],
        }
        for name, results in runs.items()
    }
    base = summary[names[0]]["median_jets_per_second"]
    for name in names:
        summary[name]["speed_vs_" + names[0]] = summary[name]["median_jets_per_second"] / base
    report = {"steps": args.steps, "batch_size": args.batch_size, "threads": 1, "baseline": args.baseline}
    publish("benchmarks/step_speed.py", {**report, "summary": summary, "runs": runs}, args.output)


if __name__ == "__main__":
    main()
