"""Ingest jet files (the public hls4ml LHC-jet HDF5 layout by default) and write a dataset.

spark-submit jobs/prepare.py --input 'GLOB' --output DIR [--format hls4ml] [--classes w,z,t] [--mass-window 10,200]
                             [--max-constituents 100] [--drop-bad-jets] [--overwrite]
"""

from __future__ import annotations

import argparse
import sys

from ucluster_spark.driver import cli
from ucluster_spark.registry import SOURCES


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="glob (or comma-separated globs) of the jet files")
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

        return prepare(
            spark, args.format, args.input, args.output, cfg.data, args.drop_bad_jets, overwrite=args.overwrite
        )

    return cli.run_dataset_job("ucluster-prepare", args, build)
