"""Executor side: the UCluster training loop of one rank (imports TensorFlow: it runs only inside the ranks).
Distributed lines are marked ``# Collective:``; the collectives come from Horovod or tf.distribute
(``collectives.py``), whichever launcher started the rank."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from ucluster_spark import checkpoint, logs, store
from ucluster_spark.config import Config
from ucluster_spark.executor.centroids import BoundedSample, ClusterMoments, kmeans_centroids, reseed_starved_centroids
from ucluster_spark.executor.losses import HalvingSchedule, alpha_for_epoch, alpha_for_jets
from ucluster_spark.executor.model import build_model
from ucluster_spark.executor.rank.collectives import Collectives
from ucluster_spark.executor.rank.curves import open_curves
from ucluster_spark.executor.rank.divergence import divergence, focal_explosion, losses_text
from ucluster_spark.executor.rank.environment import (
    ProgressLog,
    bind_rank_to_cores,
    configure_threads,
    fault_injector,
    memory_guard,
    peak_rss_mb,
    record_placement,
    usable_cores,
)
from ucluster_spark.executor.rank.evaluation import embedded_batches, evaluate_split, nearest_centroid, write_run
from ucluster_spark.executor.rank.step import SHOWN, make_batch_norm_schedule, make_optimizer, make_train_step
from ucluster_spark.executor.rank.validation import ValidationTrack, sync_non_trainable
from ucluster_spark.executor.reader import shard_size, training_batches
from ucluster_spark.metrics import collapse_warnings, loss_warnings
from ucluster_spark.plan import EpochPlan, TrainingPlan, epoch_eval_fraction
from ucluster_spark.registry import LAUNCHERS, part
from ucluster_spark.schema import feature_names


@dataclass
class Rank:
    """What one rank holds during training."""

    cfg: Config
    plan: TrainingPlan
    comm: Collectives
    log: ProgressLog
    model: tf.keras.Model
    optimizer: tf.keras.optimizers.Optimizer
    schedule: HalvingSchedule
    alpha: tf.Variable
    """The clustering loss's softmax sharpness, set before each epoch (or step, ``loss.alpha_every_jets``)."""
    beta: tf.Variable
    """The clustering loss's weight: 0 in pre-training, ``loss.clustering_weight`` after."""
    train_step: Callable[[Any, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
    epoch_plan: EpochPlan
    bn_momentum: tf.Variable
    track: ValidationTrack
    initial_focal_loss: float | None = None
    """The first step's focal loss (mean over ranks; history[0]): what a focal loss is called exploded against."""
    fault: Callable[[int, int], None] | None = None
    """The tests' injected fault (``UCLUSTER_INJECT_FAULT``), called before each step; None when it is not set."""

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def size(self) -> int:
        return self.comm.size

    @property
    def global_batch(self) -> int:
        return self.cfg.train.batch_size * self.size

    def validation_due(self, global_step: int, last_step: bool) -> bool:
        """A validation point inside the epoch (``train.validate_every_steps``); the epoch's end has its own."""
        every = self.cfg.train.validate_every_steps
        return bool(self.plan.n_val and every and not last_step and global_step % every == 0)

    def validation_point(self, global_step: int) -> dict[str, Any]:
        return self.track.measure(self.model, global_step, self.clustering_steps(global_step),
                                  self.clustering_jets(global_step), float(self.alpha.numpy()))  # fmt: skip

    def clustering_steps(self, global_step: int) -> int:
        """Optimizer steps taken with the clustering loss on, after ``global_step`` steps in all."""
        return max(global_step - self.cfg.train.pretrain_epochs * self.epoch_plan.steps, 0)

    def clustering_jets(self, global_step: int) -> float:
        """Training jets seen with the clustering loss on (all ranks), after ``global_step`` steps in all."""
        return self.clustering_steps(global_step) * self.epoch_plan.jets / self.epoch_plan.steps

    def one_pass(self, epoch: int):
        """This rank's shard once, shuffled by (seed, rank, epoch): a resumed run sees the order it would have."""
        t, d = self.cfg.train, self.cfg.data
        return training_batches(
            self.plan.train_url,
            shard=self.rank,
            shard_count=self.size,
            max_constituents=d.max_constituents,
            n_features=len(feature_names(d.feature_set)),
            batch_sizes=self.epoch_plan.batch_sizes(self.rank),
            shuffle_buffer=t.shuffle_buffer,
            seed=t.seed + 1000 * epoch + self.rank,
            target_columns=d.aux_mass_columns,
            reader=d.reader,
        )


def start_rank(cfg, plan: TrainingPlan, comm: Collectives) -> Rank:
    """Model, optimizer (restored on resume) and step count, identical on every rank."""
    t, rank, size = cfg.train, comm.rank, comm.size
    log = ProgressLog(rank, plan.run_dir)
    tf.keras.utils.set_random_seed(t.seed)  # Python, NumPy and TensorFlow: the initial weights are a function of it
    model = build_model(cfg)
    epoch_plan = shared_epoch_plan(plan.train_url, t.batch_size, comm, log, cfg.data.reader, t.steps_per_epoch)
    schedule, optimizer = make_optimizer(cfg, model, size, epoch_plan.steps)
    bn_momentum = make_batch_norm_schedule(cfg, model, epoch_plan.steps)
    if plan.resume_from and rank == 0:
        checkpoint.restore(plan.resume_from, model, optimizer)
        log(f"resumed from {plan.resume_from} after {plan.epochs_done} epoch(s), step {int(optimizer.iterations)}")
    elif t.init_from and rank == 0:  # a fresh run from another run's weights (the optimizer starts fresh)
        model.load_weights(str(store.RunLayout(t.init_from).weights))
        log(f"weights, batch-norm statistics and centroids from {t.init_from}")
    # Collective: every rank starts from rank 0's weights and optimizer state (fresh or restored).
    comm.broadcast_variables(model.variables + list(optimizer.variables), root=0)
    alpha = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="alpha")
    beta = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="beta")
    state = Rank(
        cfg=cfg, plan=plan, comm=comm, log=log, model=model, optimizer=optimizer, schedule=schedule,
        alpha=alpha, beta=beta, train_step=make_train_step(model, optimizer, cfg, alpha, beta, comm, bn_momentum),
        epoch_plan=epoch_plan, bn_momentum=bn_momentum[0], track=ValidationTrack(cfg, plan, comm, log),
        initial_focal_loss=plan.history[0].get("initial_focal_loss") if plan.history else None,
        fault=fault_injector(rank, plan.run_dir),
    )  # fmt: skip
    log(
        f"{size} rank(s) ({comm.name}), batch {t.batch_size}/rank = {state.global_batch} global, "
        f"lr {schedule.initial:g} (scale_lr_by_workers={t.scale_lr_by_workers}), {epoch_plan.steps} steps/epoch, "
        f"{plan.n_train} training jets, {model.count_params()} parameters",
    )
    return state


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


def shared_epoch_plan(
    url: str, batch_size: int, comm, log: ProgressLog, reader: str = "petastorm", max_steps: int = 0
) -> EpochPlan:
    """The same ``EpochPlan`` on every rank, from every shard's size."""
    size = comm.size
    local = shard_size(url, shard=comm.rank, shard_count=size, reader=reader)
    # Collective: every rank learns every shard's size and takes the same decision.
    sizes = comm.gather(np.array([local], np.int64), "shard_sizes").tolist()
    plan = EpochPlan.for_shards(sizes, batch_size, max_steps)
    every_batch = [n for r in range(size) for n in plan.batch_sizes(r)]
    smallest, largest = min(every_batch), max(every_batch)
    coverage = (
        "every jet once per epoch"
        if plan.whole_pass
        else f"{plan.jets} jets per epoch (train.steps_per_epoch; a pass over every jet takes {plan.pass_steps} steps)"
    )
    log(
        f"training shards {sizes} jets: {plan.steps} steps/epoch on every rank, batches of {smallest}-{largest} "
        f"jets per rank, {coverage}"
    )
    return plan


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
