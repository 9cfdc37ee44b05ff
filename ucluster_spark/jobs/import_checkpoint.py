"""Bring a model trained by the original UCluster code into this project: its TensorFlow 1 checkpoint becomes a
finished run directory that evaluate, export and the MLflow model use unchanged.

ucluster-import CKPT_PREFIX RUN_DIR [--alpha A] [--overwrite] [section.key=value ...]
                                                   (or: python jobs/import_checkpoint.py ...)

CKPT_PREFIX is the checkpoint's prefix (``…/cluster.ckpt`` for ``cluster.ckpt.index`` and its data file). The
variables are read by name (the original jet model: two GAPLayers, MLPs 64-128 and 256-256, a 3-dim embedding,
a 20-bin mass head and the centroids ``mu``); the run directory gets the as-run settings (padding processed like
particles, the focal loss's epsilon), the weights with the batch-norm statistics, the centroids, and a
metrics.json naming the checkpoint. Overrides set other layer sizes or data settings of a differently configured
original model. ``--alpha``: the assignment hardness the model was trained to (the original's last epoch:
5 x (epoch - pre-training epochs + 1)), used for soft assignments. A checkpoint whose variables or shapes do not fit
is refused naming the first mismatch (exit 2), and nothing is written. No Spark: one process, TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import sys

from ucluster_spark import errors
from ucluster_spark.driver import cli


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", metavar="CKPT_PREFIX", help="the original checkpoint, e.g. logs/run/cluster.ckpt")
    parser.add_argument("run", metavar="RUN_DIR", help="the run directory to write")
    parser.add_argument("--alpha", type=float, default=0.0, help="the alpha it was trained to (default: none)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run at RUN_DIR")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="settings beyond the as-run ones")
    return parser


def main(argv: list[str] | None = None) -> int:
    command = parser()
    args = cli.parse_args(command, sys.argv[1:] if argv is None else argv)
    if args.alpha < 0:
        command.error(f"--alpha must be >= 0, got {args.alpha}")

    def body() -> int:
        from ucluster_spark.executor.original import import_checkpoint  # TensorFlow: this job has no Spark driver

        described = import_checkpoint(args.checkpoint, args.run, list(args.overrides), args.alpha, args.overwrite)
        print(json.dumps(described))
        return errors.EXIT_OK

    return cli.run_main(body, lambda: f"nothing was written to {args.run}: run the same command again")


if __name__ == "__main__":
    sys.exit(main())
