"""Generate W/Z/top (or g/q) jets with Pythia 8 + FastJet inside Spark tasks and write a dataset.

spark-submit jobs/generate.py --classes w,z,t --jets-per-class N --seed S --output DIR [--mass-window 10,200]
                              [--no-underlying-event] [--overwrite]
"""

import sys

from ucluster_spark import cli


def main(argv: list[str]) -> int:
    args = cli.parse_args(cli.generate_parser(__doc__), argv)

    def build(spark, cfg):
        from ucluster_spark.data.sources import generate

        return generate(spark, cfg.data, args.output, overwrite=args.overwrite)

    return cli.run_dataset_job("ucluster-generate", args, build)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
