"""The scheduled pipeline step: data (generate or prepare) -> train -> evaluate, idempotent per run id.

spark-submit jobs/pipeline.py --config FILE --run-id ID [--root DIR] [section.key=value ...]

A rerun with the same id skips completed stages, resumes training from its last checkpoint and never duplicates
output. Exit codes: 0 success, 2 bad input (config, data), 3 training failed, 4 evaluation failed, 5 data
generation/preparation failed, 75 another attempt of this run id is running (retry later).
<root>/<ID>/manifest.json lists every stage and output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ucluster_spark import errors, store
from ucluster_spark.config import Config
from ucluster_spark.driver import cli


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config file (conf/*.yaml)")
    parser.add_argument("--run-id", required=True, help="names the run: a rerun with the same id continues it")
    parser.add_argument("--root", help="directory holding the pipeline runs (overrides pipeline.root)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    return cli.load_config(args.config, list(args.overrides), {"pipeline.root": ("--root", args.root)})


def main(argv: list[str] | None = None) -> int:
    args = cli.parse_args(parser(), sys.argv[1:] if argv is None else argv)

    def body() -> int:
        from ucluster_spark.driver.pipeline import run_pipeline
        from ucluster_spark.driver.session import get_session, stop

        cfg = config_from_args(args)
        store.check_output_location(Path(cfg.pipeline.root) / args.run_id, "pipeline.root")  # before Spark starts
        spark = get_session(f"ucluster-pipeline-{args.run_id}", cfg.run.spark_conf)
        try:
            manifest = run_pipeline(spark, cfg, args.run_id)
        finally:
            stop(spark)
        for name, stage in manifest["stages"].items():
            print(f"{name}: {stage['status']}")
        return errors.EXIT_OK

    return cli.run_main(body, lambda: f"run the same command again: run {args.run_id} continues where it stopped")
