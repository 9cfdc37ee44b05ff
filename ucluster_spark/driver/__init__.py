"""Code that runs in the Spark driver: the session, argument handling, launching the ranks, the evaluation and
pipeline jobs, and experiment tracking. Nothing here imports TensorFlow or Horovod; the work it starts runs in
``ucluster_spark.executor``."""
