# Databricks notebook source
# MAGIC %md
# MAGIC # UCluster on Spark — 3. Assign clusters to a dataset
# MAGIC
# MAGIC Every jet of a dataset gets its cluster, embedding, distances to the centroids and soft assignment, computed
# MAGIC by the executors (`mapInPandas`, the model loaded once per executor process) and written as parquet. With
# MAGIC labels, the clustering accuracy (Hungarian matching over every jet), NMI and ARI; plots either way.

# COMMAND ----------

try:
    DBUTILS = dbutils  # noqa: F821  (defined on Databricks only)
except NameError:
    DBUTILS = None

from ucluster_spark.driver import notebook

P = notebook.parameters(
    {
        "model": f"{notebook.work_root(DBUTILS)}/runs/notebook",
        "data": "",  # empty: the dataset the model was trained on
        "output": f"{notebook.work_root(DBUTILS)}/evaluations/notebook",
        "splits": "train,val,test",
        "overwrite": "false",
    },
    DBUTILS,
)
P

# COMMAND ----------

from ucluster_spark import config, store

from ucluster_spark.driver import tracking
from ucluster_spark.driver.evaluate import evaluate
from ucluster_spark.driver.session import get_session

spark = get_session("ucluster-evaluate")
settings = config.load(None, [f"evaluate.splits=[{P['splits']}]"]).evaluate
result = evaluate(spark, P["model"], P["data"] or None, P["output"], settings, P["overwrite"].lower() == "true")
tracking.log_evaluation(P["output"])
{k: result.get(k) for k in ("clustering_accuracy", "nmi", "ari", "n_jets", "cluster_sizes", "throughput")}

# COMMAND ----------

assignments = spark.read.parquet(store.file_url(store.EvaluationLayout(P["output"]).assignments))
counts = assignments.groupBy("split", "cluster").count().orderBy("split", "cluster")
if DBUTILS is not None:
    display(counts)  # noqa: F821
    display(assignments.limit(10))  # noqa: F821
else:
    counts.show()
    assignments.show(5, truncate=50)
