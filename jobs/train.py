"""Train UCluster with Horovod inside Spark.

spark-submit jobs/train.py --config FILE [--data DIR] [--output RUN_DIR] [--num-proc N] [section.key=value ...]
spark-submit jobs/train.py --resume RUN_DIR [--num-proc N] [section.key=value ...]
"""

import sys

from ucluster_spark import cli


def main(argv: list[str]) -> int:
    args = cli.parse_args(cli.train_parser(__doc__), argv)

    def body() -> int:
        from ucluster_spark import tracking
        from ucluster_spark.launcher import train
        from ucluster_spark.spark import get_session

        cfg = cli.config_from_args(args)
        spark = get_session("ucluster-train", cfg.run.spark_conf)
        try:
            result = train(spark, cfg, resume=args.resume is not None)
        finally:
            spark.stop()
        tracking.log_training(result.run_dir)
        m = result.metrics
        print(f"run directory: {result.run_dir}")
        print(
            f"clustering accuracy (test, {m['n_jets']} jets): {m['clustering_accuracy']:.4f} "
            f"(NMI {m['nmi']:.3f}, ARI {m['ari']:.3f})"
        )
        return cli.EXIT_OK

    return cli.run_main(body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
