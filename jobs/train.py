"""spark-submit entry point of ucluster_spark.jobs.train (see its --help)."""

import sys

from ucluster_spark.jobs.train import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
