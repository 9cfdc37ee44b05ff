"""Entry point of ucluster_spark.jobs.import_checkpoint (see its --help): no Spark, run it with python."""

import sys

from ucluster_spark.jobs.import_checkpoint import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
