"""Where one rank's training step spends its time: TensorFlow's profiler over a few steps, every op's time summed
by the layer it belongs to and by its kind (matrix products, batch norm, element-wise, top-k, gathers).

    .venv/bin/python benchmarks/step_profile.py [--steps 3] [--baseline REV] [--output FILE.json]

The step, model, batch and thread settings are those of ``benchmarks/step_speed.py`` (default model, clustering
loss on, one thread, 128 synthetic jets of 20 to 99 particles). Each variant runs in its own process: ``now`` (this
tree's default model), ``padded`` (``model.particle_layout=padded``) and, with ``--baseline REV``, ``before``: the
model of commit REV (its package from a temporary git worktree, this script's step). Times are the profiler's op
times per step (one thread: they add up to the step, less the executor's own overhead); jets/s is measured on
unprofiled steps just before. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from provenance import checked_out, publish, run_child
from step_speed import rank_step

from ucluster_spark import _env  # the runtime environment and its malloc settings; imports no TensorFlow

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"now": [], "padded": ["model.particle_layout=padded"]}
BASELINE = "before"
LAYERS = ("gap1", "gap2", "mlp1_0", "mlp1_1", "mlp2_0", "mlp2_1", "embedding_conv", "graph1", "graph2", "aux_")


def layer_of(op: str) -> str:
    """The model layer an op belongs to by its name scope; the optimizer's and the loss's ops are their own."""
    for layer in LAYERS:
        if f"/{layer}" in op:
            return layer.rstrip("_")
    if "Adam" in op:
        return "optimizer"
    return "loss, concatenations, gradient sums"


def kind_of(op: str) -> str:
    name, _, op_type = op.rpartition(":")
    if "_norm" in name or "/norm/" in name:
        return "batch norm"
    if op_type in ("MatMul", "BatchMatMulV2", "Einsum", "_FusedMatMul"):
        return "matrix products"
    if op_type == "TopKV2":
        return "top-k"
    if any(word in op_type for word in ("Gather", "Scatter", "UnsortedSegment")):
        return "gathers and scatters"
    return "element-wise and other"


def profile_child(steps: int, batch_size: int, overrides: list[str]) -> dict:
    """Runs inside the child: warm up, time unprofiled steps, then profile ``steps`` steps."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    step, batch = rank_step(batch_size, overrides)
    weight = tf.constant(1.0)
    for _ in range(2):
        step(batch, weight)[0].numpy()
    started = time.perf_counter()
    for _ in range(steps):
        step(batch, weight)[0].numpy()
    jets_per_second = steps * batch_size / (time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            step(batch, weight)[0].numpy()
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(next(Path(logdir).rglob("*.xplane.pb")).read_bytes())
    op_ms: collections.Counter = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor's threads: one event per op run
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name:  # ops are "scope/name:Type"; the executor's own spans are not
                    op_ms[name] += event.duration_ps / 1e9 / steps
    total = sum(op_ms.values())

    def table(key) -> dict:
        sums: collections.Counter = collections.Counter()
        for op, ms in op_ms.items():
            sums[key(op)] += ms
        return {name: {"ms": round(ms, 1), "share": round(ms / total, 3)} for name, ms in sums.most_common()}

    return {
        "jets_per_second": round(jets_per_second, 1),
        "op_ms_per_step": round(total, 1),
        "by_layer": table(layer_of),
        "by_kind": table(kind_of),
        "by_layer_and_kind": table(lambda op: f"{layer_of(op)} / {kind_of(op)}"),
        "top_ops": {op: round(ms, 1) for op, ms in op_ms.most_common(15)},
    }


def run_variant(name: str, steps: int, batch_size: int, baseline: Path | None) -> dict:
    script = str(Path(__file__).resolve())
    command = [sys.executable, script, "--child", str(steps), str(batch_size), *VARIANTS.get(name, [])]
    env = {**_env.MALLOC_ENV, **os.environ}
    return run_child(f"step_profile: variant {name}", command, env, baseline if name == BASELINE else ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--baseline", metavar="REV", help="also profile the model of this git revision")
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        steps, batch_size, *overrides = args.child
        print(json.dumps(profile_child(int(steps), int(batch_size), overrides)))
        return

    names = ([BASELINE] if args.baseline else []) + list(VARIANTS)
    variants = {}
    with checked_out(args.baseline) as baseline:
        for name in names:
            variants[name] = run_variant(name, args.steps, args.batch_size, baseline)
            print(f"[step_profile] {name}: {variants[name]['jets_per_second']} jets/s, "
                  f"{variants[name]['op_ms_per_step']} ms of ops per step", file=sys.stderr)  # fmt: skip
    report = {"steps": args.steps, "batch_size": args.batch_size, "threads": 1, "baseline": args.baseline}
    publish("benchmarks/step_profile.py", {**report, "variants": variants}, args.output)


if __name__ == "__main__":
    main()
