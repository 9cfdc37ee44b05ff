"""Assign every jet of a dataset to a cluster with a trained run, as a Spark job, and score it.

spark-submit jobs/evaluate.py --model RUN_DIR --output OUT_DIR [--data DATASET_DIR] [--splits test]
                              [--overwrite] [--config FILE] [evaluate.key=value ...]

Writes OUT_DIR/assignments (parquet), OUT_DIR/metrics.json and OUT_DIR/plots/, all or nothing.
"""

import sys

from ucluster_spark import cli


def main(argv: list[str]) -> int:
    args = cli.parse_args(cli.evaluate_parser(__doc__), argv)

    def body() -> int:
        from ucluster_spark import tracking
        from ucluster_spark.evaluate import evaluate
        from ucluster_spark.spark import get_session

        cfg = cli.evaluate_config_from_args(args)
        spark = get_session("ucluster-evaluate", cfg.run.spark_conf)
        try:
            result = evaluate(spark, args.model, args.data, args.output, cfg.evaluate, overwrite=args.overwrite)
        finally:
            spark.stop()
        tracking.log_evaluation(args.output)
        print(f"output: {args.output}")
        if result["labelled"]:
            print(
                f"clustering accuracy ({result['n_jets']} jets): {result['clustering_accuracy']:.4f} "
                f"(NMI {result['nmi']:.3f}, ARI {result['ari']:.3f})"
            )
        else:
            print(f"cluster sizes ({result['n_jets']} jets, no labels): {result['cluster_sizes']}")
        return cli.EXIT_OK

    return cli.run_main(body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
