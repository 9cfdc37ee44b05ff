"""Executor side: the life of one rank (imports TensorFlow: it runs only inside the ranks): connect to its peers,
start (``state.py``), train the epochs (``epoch.py``) with a checkpoint after each, evaluate the test split, and
return its summary. The collectives come from Horovod or tf.distribute (``collectives.py``), whichever launcher
started the rank."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from ucluster_spark import checkpoint, store
from ucluster_spark.config import Config
from ucluster_spark.executor.centroids import BoundedSample
from ucluster_spark.executor.rank.collectives import Collectives
from ucluster_spark.executor.rank.curves import open_curves
from ucluster_spark.executor.rank.environment import (
    bind_rank_to_cores,
    configure_threads,
    memory_guard,
    record_placement,
    usable_cores,
)
from ucluster_spark.executor.rank.epoch import run_epoch, set_centroids_by_kmeans
from ucluster_spark.executor.rank.evaluation import embedded_batches, evaluate_split, write_run
from ucluster_spark.executor.rank.state import Rank, start_rank
from ucluster_spark.metrics import collapse_warnings, loss_warnings
from ucluster_spark.plan import TrainingPlan
from ucluster_spark.registry import LAUNCHERS, part


def connect(cfg) -> Collectives:
    """This rank's collectives, from the launcher that started it (``run.launcher``), with TensorFlow's threads
    and devices set for its place on the host."""

    def configure(local_rank: int) -> None:
        configure_threads(cfg.train, local_rank)

    return part(LAUNCHERS, cfg.run.launcher, "executor").connect(cfg, configure)


def train_rank(cfg_dict: dict[str, Any], plan_dict: dict[str, Any]) -> dict[str, Any]:
    """The whole life of one rank: connect to its peers, train, evaluate; rank 0 writes the run."""
    cfg = Config.from_dict(cfg_dict)
    plan = TrainingPlan(**plan_dict)
    comm = connect(cfg)  # one process per rank
    rank_started_at = time.time()  # start-up cost = launch -> here -> the first epoch's started_at
    record_placement(plan.run_dir, comm.rank)
    with memory_guard(cfg.run.rank_memory_limit_mb, plan.run_dir):
        return train_and_evaluate(cfg, plan, comm, rank_started_at)


def train_and_evaluate(cfg, plan: TrainingPlan, comm: Collectives, rank_started_at: float) -> dict[str, Any]:
    """The epochs from where the plan starts, then the whole-test-split evaluation; this rank's summary."""
    binding = bind_rank_to_cores(comm.local_rank, comm.local_size) if cfg.run.bind_ranks_to_cores else ""
    r = start_rank(cfg, plan, comm)
    if binding:
        r.log(binding)

    history: list[dict[str, Any]] = list(plan.history)
    stopped = bool(history) and bool(history[-1].get("stopped_by"))
    if cfg.train.pretrain_epochs == 0 and plan.epochs_done == 0 and not cfg.train.init_from:  # embed once for k-means
        candidates = BoundedSample(cfg.train.kmeans_max_jets, cfg.train.seed, cfg.model.z_dim)
        with embedded_batches(r.model, plan.train_url, cfg, r.rank, r.size) as batches:
            for z, _ in batches:
                candidates.add(z)
        set_centroids_by_kmeans(r.model, candidates, cfg, comm, r.log)
    if not stopped:
        r.track.resume(r.model, history)
    curves = open_curves(store.RunLayout(plan.run_dir).tensorboard, r.log) if r.rank == 0 else None
    for epoch in range(plan.epochs_done, cfg.train.epochs):
        if stopped:
            break
        history.append(run_epoch(r, epoch))
        stopped = bool(history[-1].get("stopped_by"))
        if curves is not None:
            curves.add_epoch(history[-1])
        if r.rank == 0:
            state = checkpoint.TrainingState(epoch + 1, history, r.size)
            saved = checkpoint.save(plan.run_dir, r.model, r.optimizer, state, pinned=cfg.train.pretrain_epochs)
            r.log(f"checkpoint {saved.name} written")
    if curves is not None:
        curves.close()
    test = evaluate_split(r.model, plan.test_url, cfg, plan.classes, comm, cfg.evaluate.plot_jets)
    plot = test.pop("plot")
    metrics = {"split": "test", **test, "epochs": len(history), "num_proc": r.size, "global_batch": r.global_batch}
    metrics["global_step"] = int(r.optimizer.iterations.numpy())
    metrics["stopped_by"] = history[-1].get("stopped_by", "") if history else ""
    metrics["centroids"] = r.model.centroids.numpy().round(6).tolist()
    metrics["warnings"] = collapse_warnings(test["cluster_sizes"], test["embedding_std"]) + loss_warnings(history)
    if r.rank == 0:
        write_run(r.model, cfg, plan, metrics, plot, history)
        r.log(f"test clustering accuracy {metrics['clustering_accuracy']:.4f} on {metrics['n_jets']} jets")
        for warning in metrics["warnings"]:
            r.log(f"WARNING the run ended degenerate: {warning}")
    return rank_summary(r, metrics, rank_started_at)


def rank_summary(r: Rank, metrics: dict[str, Any], rank_started_at: float) -> dict[str, Any]:
    """What the launcher returns to the driver per rank, after training: the metrics (rank 0's are the run's), and
    what the tests and benchmarks check across ranks — the weights' digest and centroids (identical on every rank),
    when the rank started (start-up cost) and the cores it could use (core binding)."""
    return {
        "rank": r.rank,
        "rank_started_at": rank_started_at,
        "cpu_affinity": usable_cores(),
        "metrics": metrics,
        "weights_digest": weights_digest(r.model.trainable_variables),
        "centroids": r.model.centroids.numpy().tolist(),
    }


def weights_digest(variables) -> str:
    """SHA-256 of the variables' exact bytes, in order: equal only if every value, position and sign is."""
    digest = hashlib.sha256()
    for variable in variables:
        digest.update(variable.name.encode())
        digest.update(variable.numpy().tobytes())
    return digest.hexdigest()
