"""Export a finished training run's model as a TensorFlow SavedModel that runs without this package.

ucluster-export RUN_DIR OUT_DIR [--onnx] [--overwrite]        (or: python jobs/export.py RUN_DIR OUT_DIR)

OUT_DIR gets the SavedModel (all or nothing). Its signature "serving_default" takes "constituents" (float32,
[jets, particles, features] as in the dataset) and returns cluster, soft_assignment, embedding and distances: what
the evaluate job writes for the same jets; with --onnx also OUT_DIR/model.onnx, the same function in ONNX (tf2onnx),
for onnxruntime. No Spark: one process, TensorFlow on the local CPU or GPU.
"""

from __future__ import annotations

import argparse
import json
import sys

from ucluster_spark import errors
from ucluster_spark.driver import cli


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", metavar="RUN_DIR", help="finished training run directory")
    parser.add_argument("output", metavar="OUT_DIR", help="directory to write the SavedModel to")
    parser.add_argument("--onnx", action="store_true", help="also write OUT_DIR/model.onnx (needs tf2onnx)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export at OUT_DIR")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = cli.parse_args(parser(), sys.argv[1:] if argv is None else argv)

    def body() -> int:
        from ucluster_spark.executor.export import export_saved_model  # TensorFlow: this job has no Spark driver

        print(json.dumps(export_saved_model(args.run, args.output, args.overwrite, args.onnx)))
        return errors.EXIT_OK

    return cli.run_main(body, lambda: f"nothing was written to {args.output}: run the same command again")
