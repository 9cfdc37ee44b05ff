"""The console format every process uses, and run.verbose."""

import logging

import pytest

from ucluster_spark import logs

pytestmark = pytest.mark.portable  # no horovod, no petastorm: also in the current-releases environment


def test_records_and_rank_lines_share_one_format(capsys):
    logs.configure(1)
    logging.getLogger("ucluster_spark.driver.launcher").info("2 Horovod rank(s)")
    logging.getLogger("ucluster_spark.driver.launcher").warning("rank 1 failed")
    logging.getLogger("ucluster_spark.driver.pipeline").debug("not shown at verbose 1")
    lines = capsys.readouterr().err.splitlines()
    assert [line[20:] for line in lines] == ["[launcher] 2 Horovod rank(s)", "[launcher] WARNING: rank 1 failed"]
    assert logs.line("ucluster_spark.train", "epoch 1/2")[20:] == "[train] epoch 1/2"


def test_verbosity_follows_run_verbose(capsys):
    logs.configure(0)
    logging.getLogger("ucluster_spark.driver.evaluate").info("hidden")
    logging.getLogger("ucluster_spark.driver.evaluate").warning("shown")
    logs.configure(2)
    logging.getLogger("ucluster_spark.driver.evaluate").debug("details")
    logs.configure(1)
    assert [line[20:] for line in capsys.readouterr().err.splitlines()] == [
        "[evaluate] WARNING: shown",
        "[evaluate] DEBUG: details",
    ]
    handlers = logging.getLogger("ucluster_spark").handlers
    assert sum(isinstance(h, logs.StderrHandler) for h in handlers) == 1  # configuring again adds none
