"""Ingest files in the public hls4ml LHC-jet HDF5 layout and write a dataset.

spark-submit jobs/prepare.py --input 'GLOB_OF_H5' --output DIR [--classes w,z,t] [--mass-window 10,200]
                             [--max-constituents 100] [--drop-bad-jets] [--overwrite]
"""

import sys

from ucluster_spark import cli


def main(argv: list[str]) -> int:
    args = cli.parse_args(cli.prepare_parser(__doc__), argv)

    def build(spark, cfg):
        from ucluster_spark.data.sources import prepare_hls4ml

        return prepare_hls4ml(spark, args.input, args.output, cfg.data, args.drop_bad_jets, overwrite=args.overwrite)

    return cli.run_dataset_job("ucluster-prepare", args, build)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
