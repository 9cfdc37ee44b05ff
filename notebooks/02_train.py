# Databricks notebook source
# MAGIC %md
# MAGIC # UCluster on Spark — 2. Train
# MAGIC
# MAGIC ABCnet + the clustering loss, trained by `horovod.spark.run` inside this Spark application: one Horovod
# MAGIC rank per Spark task, each streaming its own shard of the parquet dataset with petastorm, gradients averaged
# MAGIC with Gloo (CPU) or NCCL (GPU). Rank 0 checkpoints after every epoch; the run directory is finished when
# MAGIC `metrics.json` exists. On Databricks: a cluster with at least `num_proc` task slots, and a run directory in
# MAGIC a Unity Catalog volume (`/Volumes/...`: every node mounts it).

# COMMAND ----------

try:
    DBUTILS = dbutils  # noqa: F821  (defined on Databricks only)
except NameError:
    DBUTILS = None

from pathlib import Path

from ucluster_spark.driver import notebook

REPO = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
P = notebook.parameters(
    {
        "config": str(REPO / "conf/local.yaml"),
        "data": f"{notebook.work_root(DBUTILS)}/datasets/wzt",
        "run_dir": f"{notebook.work_root(DBUTILS)}/runs/notebook",
        "num_proc": "2",
        "resume": "false",
        "overrides": "",  # e.g. train.epochs=20 train.pretrain_epochs=5 tracking.register_as=main.hep.ucluster
    },
    DBUTILS,
)
P

# COMMAND ----------

from ucluster_spark import store

from ucluster_spark.driver import tracking
from ucluster_spark.jobs.train import training_config
from ucluster_spark.driver.launcher import train
from ucluster_spark.driver.session import get_session

spark = get_session("ucluster-train")
resume = P["resume"].lower() == "true"
cfg = training_config(  # the train job's own rules: a resumed run keeps its config.yaml
    None if resume else P["config"],
    resume=P["run_dir"] if resume else None,
    output=None if resume else P["run_dir"],
    data=P["data"],
    num_proc=int(P["num_proc"]),
    overrides=notebook.overrides(P["overrides"]),
)
result = train(spark, cfg, resume=resume)  # progress lines appear below as rank 0 writes them
tracking.log_training(result.run_dir)  # MLflow, when configured (Databricks: the notebook's experiment): the model too
{k: result.metrics[k] for k in ("clustering_accuracy", "nmi", "ari", "n_jets", "cluster_to_class")}

# COMMAND ----------

# MAGIC %md Per-epoch record (losses, α, β, learning rate, throughput, validation accuracy, embedding spread).

# COMMAND ----------

import pandas as pd

history = pd.DataFrame(store.read_json(store.RunLayout(result.run_dir).history))
print(history[["epoch", "loss", "focal_loss", "clustering_loss_per_jet", "alpha", "jets_per_second"]])

# COMMAND ----------

# MAGIC %md The pictures of the run: curves, confusion matrix, embedding and jet mass per cluster (test split).

# COMMAND ----------

plots = sorted(store.RunLayout(result.run_dir).plots.glob("*.png"))
if DBUTILS is not None:
    import base64

    displayHTML("".join(  # noqa: F821
        f'<img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" width="900"/>' for p in plots
    ))
else:
    print("\n".join(str(p) for p in plots))
