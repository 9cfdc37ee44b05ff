"""Driver side: the SparkSession with the settings the stack needs (executors get the same Python and env)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

from pyspark.sql import SparkSession

from ucluster_spark import _env, errors


def get_session(app_name: str = "ucluster-spark", extra_conf: dict[str, str] | None = None) -> SparkSession:
    """The active session, or a new one (``local[2]`` unless spark-submit or the environment sets a master)."""
    builder = SparkSession.builder.appName(app_name)
    if "spark.master" not in os.environ.get("PYSPARK_SUBMIT_ARGS", "") and not _submitted():
        builder = builder.master(os.environ.get("UCLUSTER_SPARK_MASTER", "local[2]"))
    conf = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",  # the jobs log their own progress, one line per event
        "spark.executorEnv.PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
        # horovod.spark.run needs one task per rank running at once; keep Spark from retrying a failed rank.
        "spark.task.maxFailures": "1",
    }
    for key, value in _env.RUNTIME_ENV.items():
        conf[f"spark.executorEnv.{key}"] = value
    conf.update(extra_conf or {})
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    _quiet_accumulator_server(spark.sparkContext)
    _quiet_interrupt_echoes(spark.sparkContext)
    return spark


INTERRUPT_ECHOES = {
    # When spark-submit is stopped under a job, a task thread of the driver's JVM (local mode) can end after
    # SparkEnv has stopped; its clean-up then fails with a NullPointerException logged with its Java trace.
    "org.apache.spark.util.Utils": "Uncaught exception in thread Executor task launch worker.*",
    # Ctrl-C reaches the Python workers of the running tasks (one per rank) with the job: the executor logs each
    # as crashed. The same reason travels with the task's failure to the driver, where the job reports it.
    "org.apache.spark.executor.Executor": r".*Python worker exited unexpectedly \(crashed\).*",
    # A barrier task that ends as the interrupt tears the block manager down fails to release its broadcast block
    # (Spark 4, local mode). A listener's error fails its task, so it reaches the driver too.
    "org.apache.spark.TaskContextImpl": "Error in TaskCompletionListener.*",
}
"""Spark's log messages (logger: whole-message regex) that only echo a stop the job reports itself in one line."""


def _quiet_interrupt_echoes(sc) -> None:
    """A log4j2 filter per logger of ``INTERRUPT_ECHOES`` drops those messages only; everything else those loggers
    say is shown as before."""
    jvm = sc._jvm
    try:
        core = jvm.org.apache.logging.log4j.core
        result = getattr(core, "Filter$Result")
        context = jvm.org.apache.logging.log4j.LogManager.getContext(False)
        configuration = context.getConfiguration()
        for logger, pattern in INTERRUPT_ECHOES.items():
            logger_config = configuration.getLoggerConfig(logger)  # its own, or the nearest ancestor's (root)
            present = logger_config.getFilter()
            if present is not None and pattern in str(present.toString()):
                continue  # one filter per JVM, however many sessions it has seen
            logger_config.addFilter(core.filter.RegexFilter.createFilter(pattern, None, False, result.DENY,
                                                                         result.NEUTRAL))  # fmt: skip
        context.updateLoggers()
    except Exception as err:  # another logging backend: Spark's messages stay as they are
        logging.getLogger(__name__).debug("Spark's interrupt messages stay on: %s", err)


def _quiet_accumulator_server(sc) -> None:
    """pyspark's accumulator server (a ``socketserver``) prints a traceback of its own when the JVM's connection
    to it ends mid-update, as when spark-submit is stopped under a job; the job says so itself in one line
    (``cli.run_main``). Its other errors are shown as before. Another pyspark's internals: left as they are."""
    server = getattr(sc, "_accumulatorServer", None)
    if server is None or getattr(server, "_ucluster_quiet", False):
        return
    shown = server.handle_error

    def handle_error(request, client_address) -> None:
        if isinstance(sys.exc_info()[1], EOFError | ConnectionError):
            logging.getLogger(__name__).debug("accumulator connection from the JVM ended: %s", sys.exc_info()[1])
            return
        shown(request, client_address)

    server.handle_error = handle_error
    server._ucluster_quiet = True


def _submitted() -> bool:
    """True under spark-submit, which has already chosen the master."""
    return "SPARK_SUBMIT" in os.environ or os.environ.get("SPARK_ENV_LOADED") == "1"


def stop(spark: SparkSession) -> None:
    """Stop the session. Under spark-submit, also end the one thread that would keep its JVM alive afterwards:
    Spark 3.5's barrier timer, a non-daemon ``java.util.Timer`` started by the first barrier stage whose tasks ran
    in the driver's JVM (local mode, ``run.launcher=barrier``). Spark 4 runs it as a daemon; nothing to do there."""
    jvm = spark.sparkContext._jvm
    try:
        with warnings.catch_warnings():  # its JVM was stopped under the job, which says so itself in one line
            warnings.filterwarnings("ignore", message="Unable to cleanly shutdown Spark JVM", category=RuntimeWarning)
            spark.stop()
    except Exception as err:  # Ctrl-C or SIGTERM stopped spark-submit's JVM first: nothing is left to stop
        if not errors.spark_stopped(err):
            raise
        return
    if _submitted():
        with contextlib.suppress(Exception):  # another Spark version's internals: then it needs no help
            companion = jvm.java.lang.Class.forName("org.apache.spark.BarrierTaskContext$")
            timer = getattr(companion.getField("MODULE$").get(None), "org$apache$spark$BarrierTaskContext$$timer")()
            if timer.getClass().getName() == "java.util.Timer":
                timer.cancel()
