"""The alternatives a setting chooses between, by name: where each one's code lives and what it needs installed.

``run.launcher`` picks a launcher, ``data.reader`` a reader, ``pipeline.input_format`` (and the prepare job's
``--format``) a jet source; the loss sums the terms of ``LOSS_TERMS``. The config accepts exactly the names here;
the driver refuses a choice whose package is missing before any work; each side imports only its own part, when
it runs it (the driver never imports TensorFlow or Horovod). Adding an alternative is its module and one entry here
(docs/code-map.md says what each part must provide).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

from ucluster_spark.errors import ConfigError


@dataclass(frozen=True)
class Choice:
    """One alternative. ``driver`` / ``executor``: ``module:attribute`` of the part that runs on that side (empty
    if none); ``needs``: a package it imports; ``instead``: the alternative to name where that package is missing."""

    driver: str = ""
    executor: str = ""
    needs: str = ""
    instead: str = ""


LAUNCHERS: dict[str, Choice] = {
    # The driver part is a module with ``launch(spark, cfg, plan) -> [every rank's summary]`` and
    # ``describe(cfg) -> str``; the executor part the rank's ``Collectives`` class (executor/rank/collectives.py),
    # built with ``connect(cfg, configure)`` inside the rank.
    "horovod": Choice(
        driver="ucluster_spark.driver.launchers.horovod",
        executor="ucluster_spark.executor.rank.collectives:HorovodCollectives",
        needs="horovod",
        instead="barrier",
    ),
    "barrier": Choice(
        driver="ucluster_spark.driver.launchers.barrier",
        executor="ucluster_spark.executor.rank.collectives:StrategyCollectives",
    ),
}

READERS: dict[str, Choice] = {
    # The executor part is a module with ``open_shard(url, *, shard, shard_count, columns, num_epochs, shuffle,
    # seed, workers)`` (a context manager giving a ``tf.data.Dataset`` of column batches) and
    # ``shard_size(url, *, shard, shard_count) -> int``; both shard by petastorm's rule (executor/readers/).
    "petastorm": Choice(executor="ucluster_spark.executor.readers.petastorm", needs="petastorm", instead="arrow"),
    "arrow": Choice(executor="ucluster_spark.executor.readers.arrow"),
}


SOURCES: dict[str, Choice] = {
    # The driver part is a ``sources.FileSource`` subclass: ``open(pattern, data, drop_bad_jets)`` checks the files
    # on the driver and plans the tasks; its ``read_rows`` runs in the executors.
    "hls4ml": Choice(driver="ucluster_spark.data.formats.hls4ml:Hls4mlSource", needs="h5py"),
    "jetclass": Choice(driver="ucluster_spark.data.formats.jetclass:JetClassSource", needs="uproot"),
    "toptagging": Choice(driver="ucluster_spark.data.formats.toptagging:TopTaggingSource", needs="tables"),
    "ntuple": Choice(driver="ucluster_spark.data.formats.ntuple:NtupleSource", needs="uproot"),
}


@dataclass(frozen=True)
class Term:
    """One term of the training loss. ``executor``: ``module:function`` of a ``StepView`` (executor/terms/);
    ``weight``: the ``loss`` setting that multiplies it (0: left out of the loss); ``clustering_only``: weighted
    0 during pre-training."""

    executor: str
    weight: str
    clustering_only: bool = False


LOSS_TERMS: dict[str, Term] = {
    "focal": Term("ucluster_spark.executor.terms.focal:focal", "focal_weight"),
    "clustering": Term("ucluster_spark.executor.terms.clustering:clustering", "clustering_weight", True),
    "balance": Term("ucluster_spark.executor.terms.balance:balance", "balance_weight", True),
}


def part(choices: dict[str, Any], name: str, side: str) -> Any:
    """The ``side`` ("driver" or "executor") of the alternative ``name``: its module, or the attribute named after
    the colon."""
    module, _, attribute = getattr(choices[name], side).partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute) if attribute else loaded


def missing_package(choices: dict[str, Choice], name: str) -> str:
    """The package ``name`` needs that this environment lacks, or ""."""
    needs = choices[name].needs
    return needs if needs and importlib.util.find_spec(needs) is None else ""


def refuse_missing_package(choices: dict[str, Choice], name: str, setting: str) -> None:
    """A choice whose package this environment lacks is refused before any work (not an ImportError inside a
    task), naming the alternative where there is one."""
    package = missing_package(choices, name)
    if package:
        instead = f"; use {setting}={choices[name].instead}" if choices[name].instead else ""
        raise ConfigError(f"{setting}={name} needs {package}, which is not installed in this environment{instead} "
                          "(docs/environments.md)")  # fmt: skip
