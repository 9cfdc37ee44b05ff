"""Generate W/Z/top (or g/q) jets with Pythia 8 + FastJet inside Spark tasks and write a dataset.

spark-submit jobs/generate.py --classes w,z,t --jets-per-class N --seed S --output DIR [--mass-window 10,200]
                              [--no-underlying-event] [--overwrite]
"""

from __future__ import annotations

import argparse
import sys

from ucluster_spark.driver import cli


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jets-per-class", type=int, help="jets per class (data.jets_per_class)")
    parser.add_argument("--seed", type=int, help="generation seed; task i uses Pythia seed 100000*S+i+1")
    parser.add_argument("--tasks-per-class", type=int, help="Spark tasks per class (data.tasks_per_class)")
    parser.add_argument(
        "--no-underlying-event",
        action="store_true",
        help="switch off multi-parton interactions, PartonLevel:MPI = off (data.underlying_event=false)",
    )
    cli.dataset_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = cli.parse_args(parser(), sys.argv[1:] if argv is None else argv)

    def build(spark, cfg):
        from ucluster_spark.data.sources import generate

        return generate(spark, cfg.data, args.output, overwrite=args.overwrite)

    return cli.run_dataset_job("ucluster-generate", args, build)
