"""Ingest files in the public hls4ml LHC-jet HDF5 layout and write a dataset.

spark-submit jobs/prepare.py --input 'GLOB_OF_H5' --output DIR [--classes w,z,t] [--mass-window 10,200]
                             [--max-constituents 100] [--drop-bad-jets] [--overwrite]
"""

import sys

from ucluster_spark import cli


def main(argv: list[str]) -> int:
    args = cli.prepare_parser(__doc__).parse_args(argv)

    def body() -> int:
        from ucluster_spark.data.dataset import format_counts
        from ucluster_spark.data.sources import prepare_hls4ml
        from ucluster_spark.spark import get_session

        cfg = cli.data_config_from_args(args)
        window = cli.parse_mass_window(args.mass_window)
        spark = get_session("ucluster-prepare", cfg.run.spark_conf)
        try:
            info = prepare_hls4ml(
                spark, args.input, args.output, cfg.data, window, args.drop_bad_jets, overwrite=args.overwrite
            )
        finally:
            spark.stop()
        print(f"dataset: {args.output}")
        print(f"jets: {format_counts(info)}")
        print(f"dropped: {info.source['dropped']}")
        return cli.EXIT_OK

    return cli.run_main(body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
