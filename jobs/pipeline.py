"""The scheduled pipeline step: data (generate or prepare) -> train -> evaluate, idempotent per run id.

spark-submit jobs/pipeline.py --config FILE --run-id ID [--root DIR] [section.key=value ...]

A rerun with the same id skips completed stages, resumes training from its last checkpoint and never duplicates
output. Exit codes: 0 success, 2 bad input (config, data, run id in use), 3 training failed, 4 evaluation
failed, 5 data generation/preparation failed. <root>/<ID>/manifest.json lists every stage and output.
"""

import sys

from ucluster_spark import cli


def main(argv: list[str]) -> int:
    args = cli.parse_args(cli.pipeline_parser(__doc__), argv)

    def body() -> int:
        from ucluster_spark.pipeline import run_pipeline
        from ucluster_spark.spark import get_session

        cfg = cli.pipeline_config_from_args(args)
        spark = get_session(f"ucluster-pipeline-{args.run_id}", cfg.run.spark_conf)
        try:
            manifest = run_pipeline(spark, cfg, args.run_id)
        finally:
            spark.stop()
        for name, stage in manifest["stages"].items():
            print(f"{name}: {stage['status']}")
        return cli.EXIT_OK

    return cli.run_main(body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
