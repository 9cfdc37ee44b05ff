"""Ingest jet files (the public hls4ml LHC-jet HDF5 layout by default), or a table of the Spark catalog, and write a
dataset.

spark-submit jobs/prepare.py --input 'GLOB' --output DIR [--format hls4ml] [--classes w,z,t] [--mass-window 10,200]
                             [--max-constituents 100] [--drop-bad-jets] [--overwrite]
spark-submit jobs/prepare.py --input-table NAME --output DIR [...]
"""

from __future__ import annotations

import argparse
import sys

from ucluster_spark.driver import cli
from ucluster_spark.registry import SOURCES


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="glob (or comma-separated globs) of the jet files")
    source.add_argument("--input-table", metavar="NAME", help="a table of the Spark catalog (docs/data.md)")
    parser.add_argument("--format", choices=list(SOURCES), default="hls4ml", help="the files' layout (docs/data.md)")
    parser.add_argument(
        "--drop-bad-jets",
        action="store_true",
        help="drop (and count) jets with NaN/inf values or no constituents instead of failing",
    )
    cli.dataset_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = cli.parse_args(parser(), sys.argv[1:] if argv is None else argv)

    def build(spark, cfg):
        from ucluster_spark.data.sources import prepare
        from ucluster_spark.data.table import prepare_table

        if args.input_table:
            return prepare_table(spark, args.input_table, args.output, cfg.data, args.drop_bad_jets, args.overwrite)
        return prepare(
            spark, args.format, args.input, args.output, cfg.data, args.drop_bad_jets, overwrite=args.overwrite
        )

    return cli.run_dataset_job("ucluster-prepare", args, build)
