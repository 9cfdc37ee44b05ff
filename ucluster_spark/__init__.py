"""ucluster-spark: UCluster (ABCnet + deep-k-means clustering) trained with Horovod inside Spark."""

from ucluster_spark import _env  # noqa: F401  (must run before any TensorFlow import)

__version__ = "0.1.0"
