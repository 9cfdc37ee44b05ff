"""Code that runs inside Spark tasks and Horovod ranks: the model and its layers, the losses, the parquet reader,
the training loop of one rank (``rank/``) and cluster assignment of new jets. It is shipped to the executors by
the driver and reads only what the plan and the config tell it."""
