"""Executor side: what one rank holds while it trains (``Rank``: model, optimizer, schedules, its shard's epoch plan,
the validation track) and how it starts: identical on every rank, restored on resume."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from ucluster_spark import checkpoint, store
from ucluster_spark.config import Config
from ucluster_spark.executor.losses import HalvingSchedule
from ucluster_spark.executor.model import build_model
from ucluster_spark.executor.rank.collectives import Collectives
from ucluster_spark.executor.rank.environment import ProgressLog, fault_injector
from ucluster_spark.executor.rank.step import make_batch_norm_schedule, make_optimizer, make_train_step
from ucluster_spark.executor.rank.validation import ValidationTrack
from ucluster_spark.executor.reader import shard_size, training_batches
from ucluster_spark.plan import EpochPlan, TrainingPlan
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
