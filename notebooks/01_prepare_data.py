# Databricks notebook source
# MAGIC %md
# MAGIC # UCluster on Spark — 1. Jets as a parquet dataset
# MAGIC
# MAGIC Either **generate** W/Z/top jets with Pythia 8 + FastJet inside Spark tasks, or **prepare** jet files in a
# MAGIC layout the project reads (`hls4ml`: the public hls4ml LHC-jet HDF5 files; docs/data.md lists them). Either way the result is a dataset directory (train/val/test parquet
# MAGIC and `_ucluster_dataset.json`), written all or nothing, that the training notebook streams with petastorm.
# MAGIC
# MAGIC Runs on Databricks (widgets, Unity Catalog volume paths `/Volumes/...`) and locally as plain Python
# MAGIC (`UCLUSTER_<WIDGET>` environment variables set the parameters).

# COMMAND ----------

try:
    DBUTILS = dbutils  # noqa: F821  (defined on Databricks only)
except NameError:
    DBUTILS = None

from ucluster_spark.driver import notebook

P = notebook.parameters(
    {
        "source": "generate",  # generate, or the layout of the input files: hls4ml
        "input": "",  # glob of the files to prepare (source other than generate), e.g. /Volumes/main/default/jets/hls4ml/*.h5
        "classes": "w,z,t",
        "jets_per_class": "200",  # source=generate
        "mass_window": "",  # e.g. 10,200 (GeV, the paper's cut on the jet mass)
        "output": f"{notebook.work_root(DBUTILS)}/datasets/wzt",
        "overwrite": "false",
    },
    DBUTILS,
)
P

# COMMAND ----------

from ucluster_spark import config

from ucluster_spark.data.dataset import format_counts
from ucluster_spark.data.sources import generate, prepare
from ucluster_spark.driver.session import get_session

spark = get_session("ucluster-prepare")  # on Databricks: the cluster's session
cfg = config.load(  # the mass window "LO,HI" (GeV) is checked by the config's own rule
    None,
    [f"data.classes=[{P['classes']}]", f"data.jets_per_class={P['jets_per_class']}"]
    + ([f"data.mass_window=[{P['mass_window']}]"] if P["mass_window"] else []),
)
overwrite = P["overwrite"].lower() == "true"
if P["source"] == "generate":
    info = generate(spark, cfg.data, P["output"], overwrite=overwrite)
else:  # a layout name; an unknown one is refused with the list of known ones
    info = prepare(spark, P["source"], P["input"], P["output"], cfg.data, overwrite=overwrite)
print(format_counts(info))

# COMMAND ----------

# MAGIC %md A look at the jets (one row per jet; `constituents` is 100 particles x 8 features, flattened).

# COMMAND ----------

from ucluster_spark import store

jets = spark.read.parquet(store.file_url(store.local_path(P["output"]) / "train"))
sample = jets.select("jet_id", "label_name", "pt", "mass", "sd_mass", "tau21", "tau32", "n_constituents")
if DBUTILS is not None:
    display(sample.limit(10))  # noqa: F821
else:
    sample.show(10)
