"""Executor side: one training epoch of a rank, step by step — the optimizer steps, the epoch's means and the
divergence checks, the k-means start, re-seeding, the epoch's record and its validation. Distributed lines are marked
``# Collective:``: every rank runs them in the same order."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from ucluster_spark import logs
from ucluster_spark.executor.centroids import BoundedSample, ClusterMoments, kmeans_centroids, reseed_starved_centroids
from ucluster_spark.executor.losses import alpha_for_epoch, alpha_for_jets
from ucluster_spark.executor.rank.collectives import Collectives
from ucluster_spark.executor.rank.divergence import divergence, focal_explosion, losses_text
from ucluster_spark.executor.rank.environment import (
    ProgressLog,
    peak_rss_mb,
)
from ucluster_spark.executor.rank.evaluation import evaluate_split, nearest_centroid
from ucluster_spark.executor.rank.state import Rank
from ucluster_spark.executor.rank.step import SHOWN
from ucluster_spark.executor.rank.validation import sync_non_trainable
from ucluster_spark.metrics import collapse_warnings
from ucluster_spark.plan import epoch_eval_fraction


@dataclass
class EpochSteps:
    """What one epoch's optimizer steps leave for its record: loss sums, the k-means sample (last pre-training
    epoch), the clustering phase's cluster moments, the validation points inside the epoch and any stop."""

    sums: np.ndarray
    steps_done: int
    first_focal: float
    pooled: BoundedSample
    moments: ClusterMoments | None
    points: list[dict[str, Any]]
    stopped_by: str
    started_at: float
    seconds: float
    cpu_seconds: float


def run_epoch(r: Rank, epoch: int) -> dict[str, Any]:
    """One pass of every rank over its shard (or the steps up to where the stop rule ends training), then the
    epoch's record (means over ranks, validation metrics, the epoch's validation points)."""
    t = r.cfg.train
    # The last pre-training epoch sees every training jet once (or its steps' jets), in training mode: the
    # embeddings it makes live in the space the clustering loss will see (batch-norm batch statistics), as in the
    # original. Only the k-means sample's candidates are kept.
    collect = epoch == t.pretrain_epochs - 1
    clustering = epoch >= t.pretrain_epochs
    steps = take_steps(r, epoch, clustering, collect)
    sync_non_trainable(r.model, r.comm)
    means = checked_epoch_means(r, epoch, steps)
    kmeans_seconds = set_centroids_by_kmeans(r.model, steps.pooled, r.cfg, r.comm, r.log) if collect else None
    train_cluster_sizes = reseed_starved(r, epoch, steps) if steps.moments is not None else []
    record = epoch_record(r, epoch, steps, means)
    if kmeans_seconds is not None:
        record["kmeans_seconds"] = kmeans_seconds
        record["kmeans_centroids"] = r.model.centroids.numpy().round(6).tolist()
    if train_cluster_sizes:
        record["train_cluster_sizes"] = train_cluster_sizes  # nearest centroid during the epoch's steps
    stopped_by = steps.stopped_by
    if r.plan.n_val:
        stopped_by = validate_epoch(r, epoch, record, steps.points, stopped_by, clustering)
    if steps.points:
        record["validations"] = steps.points
    if stopped_by:
        record["stopped_by"] = stopped_by
        r.log(f"epoch {epoch + 1}: training ends at step {record['global_step']}: {stopped_by}")
    if collect and r.plan.n_test:
        record.update(kmeans_start_on_test(r))
    r.log(logs.epoch_line(record, t.epochs))
    return record


def take_steps(r: Rank, epoch: int, clustering: bool, collect: bool) -> EpochSteps:
    """The epoch's optimizer steps: the same count on every rank (no hang on uneven shards), every jet once; stops
    every rank at a step whose averaged gradient is not finite, or where the stop rule ends training."""
    t, lc = r.cfg.train, r.cfg.loss
    steps = EpochSteps(
        sums=np.zeros(1 + len(SHOWN)), steps_done=0, first_focal=np.nan,  # the loss and the shown terms
        pooled=BoundedSample(t.kmeans_max_jets, t.seed, r.cfg.model.z_dim),
        moments=ClusterMoments.zeros(r.cfg.model.n_clusters, r.cfg.model.z_dim) if clustering else None,
        points=[], stopped_by="", started_at=time.time(), seconds=0.0, cpu_seconds=0.0,
    )  # fmt: skip
    cpu_start = time.process_time()
    r.alpha.assign(alpha_for_epoch(epoch, t.pretrain_epochs, lc.alpha_start, lc.alpha_step))
    r.beta.assign(lc.clustering_weight if clustering else 0.0)
    first_step = epoch * r.epoch_plan.steps
    with r.one_pass(epoch) as train_ds:
        batches = iter(train_ds)
        for step, weight in enumerate(r.epoch_plan.gradient_weights(r.rank)):
            if r.fault is not None:
                r.fault(epoch, step)
            if clustering and lc.alpha_every_jets:
                jets = r.clustering_jets(first_step + step)
                r.alpha.assign(alpha_for_jets(jets, lc.alpha_start, lc.alpha_step, lc.alpha_every_jets))
            means, z = r.train_step(next(batches), tf.constant(weight, tf.float32))
            means, finite = np.split(means.numpy(), [1 + len(SHOWN)])
            if not finite[0]:  # the averaged gradient: the same on every rank, so every rank stops at this step
                problem = f"the gradient averaged over the ranks is not finite ({losses_text(means)})"
                raise divergence(r.cfg, r.size, epoch, first_step + step + 1, problem)
            if step == 0 and epoch == 0:
                steps.first_focal = means[1]
            steps.sums += means
            steps.steps_done += 1
            if clustering:
                r.track.interval_loss.append(float(means[2]))
            if collect:
                steps.pooled.add(z.numpy())
            if steps.moments is not None:
                z = z.numpy()
                steps.moments.add(z, nearest_centroid(z, r.model.centroids.numpy()))
            global_step = first_step + step + 1
            if clustering and r.validation_due(global_step, last_step=step + 1 == r.epoch_plan.steps):
                steps.points.append(r.validation_point(global_step))
                steps.stopped_by = r.track.stop_reason()
                if steps.stopped_by:
                    break
    steps.seconds, steps.cpu_seconds = time.time() - steps.started_at, time.process_time() - cpu_start
    return steps


def checked_epoch_means(r: Rank, epoch: int, steps: EpochSteps) -> np.ndarray:
    """The epoch's mean loss, focal and clustering terms over all ranks; a non-finite or exploded one stops every
    rank (the first epoch also fixes the first step's focal loss that later epochs are measured against)."""
    global_step = epoch * r.epoch_plan.steps + steps.steps_done
    # Collective: epoch means over all ranks.
    means = r.comm.mean(steps.sums / steps.steps_done, "epoch_means")
    if not np.isfinite(means).all():  # a rank's loss, though the gradient stayed finite
        problem = f"the epoch's mean loss over the ranks is not finite ({losses_text(means)})"
        raise divergence(r.cfg, r.size, epoch, global_step, problem)
    if epoch == 0:  # Collective: every rank is in its first epoch here
        r.initial_focal_loss = float(r.comm.mean(np.array([steps.first_focal]), "initial_focal_loss")[0])
    if problem := focal_explosion(float(means[1]), r.initial_focal_loss, r.cfg.loss.focal_epsilon):
        raise divergence(r.cfg, r.size, epoch, global_step, problem)
    return means


def reseed_starved(r: Rank, epoch: int, steps: EpochSteps) -> list[int]:
    """The training jets per cluster during the epoch's steps; a centroid left with too few is re-seeded
    (``train.min_cluster_fraction``) unless the stop rule ended training."""
    # Collective: every rank sums the same moments and takes the same re-seeding decision.
    total = r.comm.sum(steps.moments.flat(), "cluster_moments")
    moments = ClusterMoments.from_flat(total, r.cfg.model.n_clusters, r.cfg.model.z_dim)
    fraction = r.cfg.train.min_cluster_fraction
    if fraction and not steps.stopped_by:
        centroids, moves = reseed_starved_centroids(r.model.centroids.numpy(), moments, fraction)
        for dead, donor in moves:
            r.log(f"epoch {epoch + 1}: cluster {dead} held {int(moments.counts[dead])} training jets; its centroid "
                  f"re-seeded by splitting cluster {donor} ({int(moments.counts[donor])} jets)")  # fmt: skip
        r.model.centroids.assign(centroids)
    return [int(n) for n in moments.counts]


def epoch_record(r: Rank, epoch: int, steps: EpochSteps, means: np.ndarray) -> dict[str, Any]:
    """The epoch's line of ``history.json``: losses, schedules, time and memory."""
    loss, focal, clustering_loss = means
    return {
        "epoch": epoch,
        "loss": float(loss),
        "focal_loss": float(focal),
        "clustering_loss_per_jet": float(clustering_loss),
        "alpha": float(r.alpha.numpy()),
        "beta": float(r.beta.numpy()),
        "learning_rate": float(r.schedule(r.optimizer.iterations - 1).numpy()),  # of the epoch's last step
        "bn_momentum": float(r.bn_momentum.numpy()),
        "global_step": epoch * r.epoch_plan.steps + steps.steps_done,
        **({"initial_focal_loss": r.initial_focal_loss} if epoch == 0 else {}),
        "started_at": steps.started_at,
        "seconds": steps.seconds,
        "cpu_seconds": steps.cpu_seconds,  # rank 0's process, all its threads
        "jets_per_second": r.epoch_plan.jets * steps.steps_done / r.epoch_plan.steps / steps.seconds,
        # Collective: every rank's peak resident memory so far (MB).
        "peak_rss_mb": [round(float(v), 1) for v in r.comm.gather(np.array([peak_rss_mb()]), "peak_rss")],
    }


def validate_epoch(r: Rank, epoch: int, record: dict[str, Any], points: list[dict[str, Any]], stopped_by: str,
                   clustering: bool) -> str:  # fmt: skip
    """The epoch's validation metrics into ``record`` (the epoch's last validation point once the centroids are
    set, a sample's embedding spread before); returns why training stops, if the stop rule says so."""
    t = r.cfg.train
    centroids_set = epoch >= t.pretrain_epochs - 1  # before that they are still random
    if centroids_set and not stopped_by:  # the epoch's last point: after any re-seeding, as checkpointed
        points.append(r.validation_point(record["global_step"]))
        stopped_by = r.track.stop_reason() if clustering else ""
    if centroids_set:
        val = points[-1]
        record.update({f"val_{k}": val[f"val_{k}"] for k in ("clustering_accuracy", "nmi", "cluster_sizes")})
        record["val_embedding_std"] = val["val_embedding_std"]
    else:
        val = evaluate_split(r.model, r.plan.val_url, r.cfg, r.plan.classes, r.comm,
                             sample_fraction=epoch_eval_fraction(t.epoch_eval_max_jets, r.plan.n_val))  # fmt: skip
        record["val_embedding_std"] = val["embedding_std"]
    if not np.isfinite(record["val_embedding_std"]).all():  # over every rank's jets: every rank stops here
        raise divergence(r.cfg, r.size, epoch, record["global_step"], "the validation embedding is not finite")
    record["val_warnings"] = collapse_warnings(record.get("val_cluster_sizes", []), record["val_embedding_std"])
    for warning in record["val_warnings"]:
        r.log(f"WARNING epoch {epoch + 1}: {warning}")
    return stopped_by


def kmeans_start_on_test(r: Rank) -> dict[str, float]:
    """The k-means start on the test split too: what the clustering phase adds is measured against it."""
    fraction = epoch_eval_fraction(r.cfg.train.epoch_eval_max_jets, r.plan.n_test)
    start = evaluate_split(r.model, r.plan.test_url, r.cfg, r.plan.classes, r.comm, sample_fraction=fraction)
    r.log(f"k-means start: test accuracy {start['clustering_accuracy']:.3f}, nmi {start['nmi']:.3f}")
    return {"kmeans_start_test_accuracy": start["clustering_accuracy"], "kmeans_start_test_nmi": start["nmi"]}


def set_centroids_by_kmeans(model, candidates: BoundedSample, cfg, comm: Collectives, log: ProgressLog) -> float:
    """k-means on a bounded sample of the training split's embeddings from all ranks, identical on every rank;
    returns the seconds it took (sampling, k-means, broadcast)."""
    started = time.time()
    # Collective: the sample gathered, k-means on rank 0, its centroids broadcast.
    centers, used, sizes = kmeans_centroids(candidates, cfg.model.n_clusters, cfg.train.seed, comm)
    if comm.rank == 0:
        log(
            f"k-means start from {used} training embeddings: cluster sizes {'/'.join(map(str, sizes))}, "
            f"{time.time() - started:.1f} s",
        )
    model.centroids.assign(centers)
    return time.time() - started
