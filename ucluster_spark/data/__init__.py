"""The first stage: jets from Pythia or hls4ml HDF5 files into the project's parquet dataset, as Spark jobs.

``sources.py`` and ``dataset.py`` run on the driver (plan the tasks, write and check datasets); ``simulate.py``,
``ingest.py`` and ``features.py`` are the functions the executors run on each task's slice of the work."""
