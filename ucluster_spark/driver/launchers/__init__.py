"""Driver side: the launchers ``run.launcher`` chooses between (registry.LAUNCHERS), one module each, with
``launch(spark, cfg, plan)`` returning every rank's summary and ``describe(cfg)`` for the start line."""
