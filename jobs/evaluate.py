"""spark-submit entry point of ucluster_spark.jobs.evaluate (see its --help)."""

import sys

from ucluster_spark.jobs.evaluate import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
