"""Export a finished training run's model: a TensorFlow SavedModel that runs without this package, its ONNX
conversion, or an MLflow model in the tracking server.

ucluster-export RUN_DIR OUT_DIR [--onnx] [--overwrite]        (or: python jobs/export.py RUN_DIR OUT_DIR)
ucluster-export RUN_DIR --mlflow [--register-as NAME]

OUT_DIR gets the SavedModel (all or nothing). Its signature "serving_default" takes "constituents" (float32,
[jets, particles, features] as in the dataset) and returns cluster, soft_assignment, embedding and distances: what
the evaluate job writes for the same jets; with --onnx also OUT_DIR/model.onnx, the same function in ONNX (tf2onnx),
for onnxruntime. --mlflow logs the model to MLflow (MLFLOW_TRACKING_URI) as a pyfunc with a signature, registered
under NAME with --register-as; the train job and the pipeline do this by themselves when MLflow is configured.
No Spark: one process, TensorFlow on the local CPU or GPU.
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
    parser.add_argument("output", metavar="OUT_DIR", nargs="?", help="directory to write the SavedModel to")
    parser.add_argument("--onnx", action="store_true", help="also write OUT_DIR/model.onnx (needs tf2onnx)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export at OUT_DIR")
    parser.add_argument("--mlflow", action="store_true", help="log the model to MLflow (MLFLOW_TRACKING_URI)")
    parser.add_argument("--register-as", metavar="NAME", default="", help="with --mlflow: register it as NAME")
    parser.add_argument("--mlflow-run-id", metavar="ID", default="", help="with --mlflow: into this MLflow run")
    return parser


def main(argv: list[str] | None = None) -> int:
    command = parser()
    args = cli.parse_args(command, sys.argv[1:] if argv is None else argv)
    if not args.output and not args.mlflow:
        command.error("give OUT_DIR, --mlflow, or both")
    if args.onnx and not args.output:
        command.error("--onnx writes OUT_DIR/model.onnx: give OUT_DIR")
    if (args.register_as or args.mlflow_run_id) and not args.mlflow:
        command.error("--register-as and --mlflow-run-id go with --mlflow")

    def body() -> int:
        if args.mlflow:
            check_tracking_configured()
        from ucluster_spark.executor.export import export_saved_model  # TensorFlow: this job has no Spark driver

        described = {}
        if args.output:
            described = export_saved_model(args.run, args.output, args.overwrite, args.onnx)
        if args.mlflow:
            from ucluster_spark.executor.mlflow_model import log_model

            exported = dict(described) if args.output else None  # the SavedModel just written, not a second one
            described["mlflow"] = log_model(args.run, args.register_as, args.mlflow_run_id, exported)
        print(json.dumps(described))
        return errors.EXIT_OK

    target = args.output or "MLflow"
    return cli.run_main(body, lambda: f"nothing was written to {target}: run the same command again")


def check_tracking_configured() -> None:
    """--mlflow needs the package and a server to log to: refused by name before any work."""
    from ucluster_spark.driver import tracking

    if not tracking.enabled():
        raise errors.ConfigError(
            "--mlflow needs the mlflow package (pip install -e '.[tracking]') and a tracking server "
            "(MLFLOW_TRACKING_URI, or a Databricks runtime)"
        )


if __name__ == "__main__":  # python -m ucluster_spark.jobs.export: how the train job logs its model, in a child
    sys.exit(main())
