"""Assign every jet of a dataset to a cluster with a trained run, as a Spark job, and score it.

spark-submit jobs/evaluate.py --model RUN_DIR|MODEL_URI --output OUT_DIR [--data DATASET_DIR] [--splits test]
                              [--overwrite] [--output-table NAME [--table-mode append|overwrite] [--run-id ID]]
                              [--config FILE] [evaluate.key=value ...]

--model is a finished run directory or a model the train job logged to MLflow (models:/NAME/VERSION,
runs:/ID/model; needs mlflow and MLFLOW_TRACKING_URI): the same numbers either way. Writes OUT_DIR/assignments
(parquet), OUT_DIR/metrics.json and OUT_DIR/plots/, all or nothing; with --output-table, then the assignments into
that catalog table with their run ID and model version.
"""

from __future__ import annotations

import argparse
import sys

from ucluster_spark import errors, store
from ucluster_spark.config import Config
from ucluster_spark.driver import cli


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="RUN_DIR|MODEL_URI",
                        help="finished training run directory, or MLflow model URI (models:/NAME/VERSION)")  # fmt: skip
    parser.add_argument("--data", help="dataset directory to assign (default: the run's own dataset)")
    parser.add_argument("--output", required=True, help="directory to write (assignments/, metrics.json, plots/)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output of this job")
    parser.add_argument("--splits", help="comma-separated splits to assign (evaluate.splits; default all)")
    parser.add_argument("--output-table", metavar="NAME", help="also write the assignments here")
    parser.add_argument("--table-mode", choices=["append", "overwrite"], help="this run ID's rows: add or replace")
    parser.add_argument("--run-id", help="the run ID of the table's rows (default: the output directory's name)")
    parser.add_argument("--config", help="YAML config whose evaluate section gives the defaults (optional)")
    parser.add_argument("overrides", nargs="*", metavar="evaluate.key=value", help="config overrides")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    flags = {
        "evaluate.splits": ("--splits", cli.comma_list(args.splits) if args.splits else None),
        "evaluate.table": ("--output-table", args.output_table),
        "evaluate.table_mode": ("--table-mode", args.table_mode),
        "evaluate.run_id": ("--run-id", args.run_id),
    }
    return cli.load_config(args.config, list(args.overrides), flags)


def main(argv: list[str] | None = None) -> int:
    args = cli.parse_args(parser(), sys.argv[1:] if argv is None else argv)

    def body() -> int:
        from ucluster_spark.driver import tracking
        from ucluster_spark.driver.evaluate import evaluate
        from ucluster_spark.driver.session import get_session, stop

        cfg = config_from_args(args)
        store.check_output_location(args.output, "--output")  # before Spark starts
        spark = get_session("ucluster-evaluate", cfg.run.spark_conf)
        try:
            result = evaluate(spark, args.model, args.data, args.output, cfg.evaluate, overwrite=args.overwrite)
        finally:
            stop(spark)
        tracking.log_evaluation(args.output)
        print(f"output: {args.output}")
        if result["labelled"]:
            print(
                f"clustering accuracy ({result['n_jets']} jets): {result['clustering_accuracy']:.4f} "
                f"(NMI {result['nmi']:.3f}, ARI {result['ari']:.3f})"
            )
        else:
            print(f"cluster sizes ({result['n_jets']} jets, no labels): {result['cluster_sizes']}")
        if result["warnings"]:
            print(f"DEGENERATE: {'; '.join(result['warnings'])}")
        if "table" in result:
            t = result["table"]
            print(f"table {t['name']}: {t['rows']} rows of run {t['run_id']} ({t['model_version']})")
        return errors.EXIT_OK

    return cli.run_main(body, lambda: f"nothing was written to {args.output}: run the same command again")
