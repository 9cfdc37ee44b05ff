"""Driver-side decisions of the launcher: the failure watchdog's timing and messages, the task-slot check."""

import json
import threading
import time
from pathlib import Path

import pytest

from ucluster_spark.config import ConfigError
from ucluster_spark.driver.launcher import check_slots
from ucluster_spark.driver.launchers.supervision import FailureWatchdog, restored_signal_handlers


def _report(failures, rank, error="UnknownError: Gloo timeout"):
    failures.mkdir(parents=True, exist_ok=True)
    (failures / f"rank-{rank}.json").write_text(
        json.dumps({"rank": str(rank), "host": "h", "pid": 1, "error": error, "at": time.time()})
    )


def test_watchdog_stops_the_ranks_only_after_the_grace_period(tmp_path, package_log):
    aborted = threading.Event()
    failures = tmp_path / "failures"
    _report(failures, 1, "left from an earlier attempt")
    with FailureWatchdog(failures, grace_seconds=1.0, interval=0.05, abort=aborted.set) as watchdog:
        assert not failures.exists()  # stale reports are cleared before the ranks start
        time.sleep(0.3)
        assert not aborted.is_set() and package_log.text == ""  # no failure: nothing happens
        _report(failures, 0)
        time.sleep(0.4)
        assert "rank 0 failed (UnknownError: Gloo timeout); waiting up to 1 s" in package_log.text
        assert not aborted.is_set()  # within the grace period the others may still exit by themselves
        assert aborted.wait(3.0)
    assert watchdog.stopped_ranks
    assert "rank 0 on h failed: UnknownError: Gloo timeout" in watchdog.summary()
    assert "were stopped by the driver" in watchdog.summary()


def test_watchdog_without_failures_never_aborts(tmp_path):
    aborted = threading.Event()
    with FailureWatchdog(tmp_path / "failures", grace_seconds=0.0, interval=0.05, abort=aborted.set) as watchdog:
        time.sleep(0.3)
    assert not aborted.is_set() and watchdog.summary() == ""


def test_signal_handlers_are_restored_after_a_launcher_replaced_them():
    import signal

    before = signal.getsignal(signal.SIGTERM)
    with restored_signal_handlers():
        signal.signal(signal.SIGTERM, lambda *_: None)  # what horovod's launch_gloo does
    assert signal.getsignal(signal.SIGTERM) is before


def test_more_ranks_than_task_slots_are_refused_before_launch():
    from ucluster_spark.driver.session import get_session

    spark = get_session("slot-check")  # the active session, or a new one if an earlier test stopped it
    check_slots(spark, spark.sparkContext.defaultParallelism)
    too_many = spark.sparkContext.defaultParallelism + 1
    message = rf"run.num_proc={too_many} ranks need {too_many} concurrent Spark task slots"
    with pytest.raises(ConfigError, match=message):  # bad input (exit 2): a rerun cannot fix it
        check_slots(spark, too_many)


def test_ranks_and_executors_start_with_the_malloc_thresholds_unless_switched_off(monkeypatch, spark):
    from ucluster_spark import _env, config
    from ucluster_spark.driver.launchers.horovod import rank_environment

    for key in _env.MALLOC_ENV:
        monkeypatch.delenv(key, raising=False)
    on = rank_environment(config.load(None))
    assert {k: on[k] for k in _env.MALLOC_ENV} == _env.MALLOC_ENV
    off = rank_environment(config.load(None, ["run.malloc_thresholds=false"]))
    assert not set(_env.MALLOC_ENV) & set(off)
    # Spark's Python workers (the evaluate job's executors) get them through spark.executorEnv.
    for key, value in _env.MALLOC_ENV.items():
        assert spark.sparkContext.getConf().get(f"spark.executorEnv.{key}") == value


def test_the_jvms_start_with_two_malloc_arenas(spark):
    """Executors through spark.executorEnv; the local JVM (here the tests' own, started after the package set its
    environment) from its parent's environment."""
    from ucluster_spark import _env

    assert spark.sparkContext.getConf().get("spark.executorEnv.MALLOC_ARENA_MAX") == "2" == _env.ARENA_ENV[
        "MALLOC_ARENA_MAX"]  # fmt: skip
    jvm_pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    environ = Path(f"/proc/{jvm_pid}/environ").read_bytes().split(b"\0")
    assert b"MALLOC_ARENA_MAX=2" in environ
