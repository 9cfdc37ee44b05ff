"""Generate W/Z/top (or g/q) jets with Pythia 8 + FastJet inside Spark tasks and write a dataset.

spark-submit jobs/generate.py --classes w,z,t --jets-per-class N --seed S --output DIR [--overwrite]
"""

import sys

from ucluster_spark import cli


def main(argv: list[str]) -> int:
    args = cli.generate_parser(__doc__).parse_args(argv)

    def body() -> int:
        from ucluster_spark.data.dataset import format_counts
        from ucluster_spark.data.sources import generate
        from ucluster_spark.spark import get_session

        cfg = cli.data_config_from_args(args)
        spark = get_session("ucluster-generate", cfg.run.spark_conf)
        try:
            info = generate(spark, cfg.data, args.output, overwrite=args.overwrite)
        finally:
            spark.stop()
        print(f"dataset: {args.output}")
        print(f"jets: {format_counts(info)}")
        return cli.EXIT_OK

    return cli.run_main(body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
