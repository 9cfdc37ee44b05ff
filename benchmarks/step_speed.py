"""Speed of one rank's training step under different process settings: glibc malloc thresholds, XLA, oneDNN.

    .venv/bin/python benchmarks/step_speed.py [--steps 16] [--repeats 3] [--output FILE.json]

Each variant runs in its own fresh process (malloc settings act only at process start), in turns (A B C A B C ...)
so that drifts of a noisy machine fall on every variant alike. Every process builds the default model with the same
seed and runs the same training step (clustering loss on, batch-norm momentum schedule, no Horovod) on the same
batch of 128 synthetic jets, and reports jets/s, user and system CPU seconds, minor page faults and the losses
after the timed steps, so a variant that changes the numbers is visible. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ucluster_spark import _env  # the runtime environment and its malloc settings; imports no TensorFlow

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, dict] = {
    "glibc_default": {"env": {key: None for key in _env.MALLOC_ENV}, "jit": False},
    "malloc_thresholds": {"env": {}, "jit": False},  # the project's runtime environment (ucluster_spark/_env.py)
    "malloc_thresholds_xla": {"env": {}, "jit": True},
    "malloc_thresholds_onednn_off": {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "jit": False},
}


def one_process(jit: bool, steps: int, batch_size: int) -> dict:
    """Runs inside the child: time ``steps`` training steps after one warm-up step."""
    import numpy as np

    import tensorflow as tf  # isort: skip

    from ucluster_spark import config
    from ucluster_spark.executor.model import build_model
    from ucluster_spark.executor.rank.environment import configure_threads
    from ucluster_spark.executor.rank.step import make_batch_norm_schedule, make_optimizer, make_train_step
    from ucluster_spark.schema import CONSTITUENTS, MASS

    cfg = config.load(None)
    configure_threads(cfg.train)
    tf.keras.utils.set_random_seed(cfg.train.seed)
    model = build_model(cfg)
    _, optimizer = make_optimizer(cfg, model, workers=1, steps_per_epoch=100)
    bn_momentum = make_batch_norm_schedule(cfg, model, 100)
    alpha, beta = tf.Variable(cfg.loss.alpha_start), tf.Variable(cfg.loss.clustering_weight)
    step = make_train_step(model, optimizer, cfg, alpha, beta, bn_momentum=bn_momentum)
    if jit:
        step = tf.function(step.python_function, jit_compile=True)
    rng = np.random.default_rng(0)
    x = np.zeros((batch_size, cfg.data.max_constituents, 8), np.float32)
    for i, n in enumerate(rng.integers(20, cfg.data.max_constituents, batch_size)):
        x[i, :n] = rng.normal(size=(n, 8))
    batch = {CONSTITUENTS: tf.constant(x), MASS: tf.constant(rng.uniform(0, 250, batch_size).astype(np.float32))}
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


def run_variant(name: str, steps: int, batch_size: int) -> dict:
    env = {**_env.MALLOC_ENV, **os.environ}
    for key, value in VARIANTS[name]["env"].items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["TF_USE_LEGACY_KERAS"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    jit = "1" if VARIANTS[name]["jit"] else "0"
    command = [sys.executable, __file__, "--child", jit, str(steps), str(batch_size)]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        jit, steps, batch_size = args.child
        print(json.dumps(one_process(jit == "1", int(steps), int(batch_size))))
        return

    names = args.variants.split(",")
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names:
            runs[name].append(run_variant(name, args.steps, args.batch_size))
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
    report = {
        "command": " ".join(["benchmarks/step_speed.py", *sys.argv[1:]]),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "threads": 1,
        "summary": summary,
        "runs": runs,
    }
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
