"""Executor side: the collectives a rank needs, behind one small interface, from Horovod or from
``tf.distribute.MultiWorkerMirroredStrategy``.

The training loop, the k-means start and the evaluation call only these methods; which library moves the numbers
is the launcher's choice (``run.launcher``). Everything here runs inside a rank's process, after the launcher has
set up its peers (Horovod's environment, or ``TF_CONFIG`` from the barrier stage).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import tensorflow as tf


class Collectives(Protocol):
    """What a rank's code calls to talk to its peers. Every rank makes the same calls in the same order; ``name``
    tells the calls apart where a library matches them by name. A launcher's executor part implements it
    (registry.LAUNCHERS) and is built inside the rank by ``connect``."""

    name: str
    rank: int
    size: int
    local_rank: int
    local_size: int

    def gradients(self, tape: tf.GradientTape, loss, variables) -> list:
        """The loss's gradients, averaged over ranks."""

    def broadcast_variables(self, variables, root: int = 0) -> None:
        """Root's values in every rank's variables."""

    def sum_in_step(self, tensor: tf.Tensor, name: str) -> tf.Tensor:
        """A sum over ranks inside the training step's graph."""

    def sum(self, array, name: str) -> np.ndarray: ...

    def mean(self, array, name: str) -> np.ndarray: ...

    def gather(self, array, name: str) -> np.ndarray:
        """Every rank's rows, in rank order; ranks may hold different numbers of rows."""

    def broadcast(self, array, root: int, name: str) -> np.ndarray: ...


class HorovodCollectives:
    """Horovod over Gloo (CPU) or NCCL (GPU): what ``horovod.spark.run`` starts."""

    name = "horovod"

    @classmethod
    def connect(cls, cfg, configure: Callable[[int], None]) -> HorovodCollectives:
        return cls(cfg.run.horovod_cycle_time_ms, configure)

    def __init__(self, cycle_time_ms: float, configure: Callable[[int], None]):
        """``configure(local_rank)`` sets up TensorFlow's threads and devices once the rank is known."""
        import horovod.tensorflow as hvd

        os.environ["HOROVOD_CYCLE_TIME"] = f"{cycle_time_ms:g}"  # read by hvd.init
        hvd.init()
        self.hvd = hvd
        self.rank, self.size = hvd.rank(), hvd.size()
        self.local_rank, self.local_size = hvd.local_rank(), hvd.local_size()
        configure(self.local_rank)

    def gradients(self, tape: tf.GradientTape, loss, variables) -> list:
        """Gradients averaged over ranks, each allreduce named by its variable's index: the default names come from
        the gradient ops, which differ between traces of the step, and a rank that traced it at another step than
        its peer would wait forever on a tensor the peer names differently."""
        return self.hvd.DistributedGradientTape(tape).gradient(loss, variables, use_generic_names=True)

    def broadcast_variables(self, variables, root: int = 0) -> None:
        self.hvd.broadcast_variables(variables, root_rank=root)

    def sum_in_step(self, tensor: tf.Tensor, name: str) -> tf.Tensor:
        """A sum over ranks inside the training step's graph."""
        return self.hvd.allreduce(tensor, op=self.hvd.Sum, name=name)

    def sum(self, array, name: str) -> np.ndarray:
        return self.hvd.allreduce(tf.constant(array), op=self.hvd.Sum, name=name).numpy()

    def mean(self, array, name: str) -> np.ndarray:
        return self.hvd.allreduce(tf.constant(array), op=self.hvd.Average, name=name).numpy()

    def gather(self, array, name: str) -> np.ndarray:
        """Every rank's rows, in rank order (ranks may hold different numbers of rows)."""
        return self.hvd.allgather(tf.constant(array), name=name).numpy()

    def broadcast(self, array, root: int, name: str) -> np.ndarray:
        return self.hvd.broadcast(tf.constant(array), root_rank=root, name=name).numpy()


class StrategyCollectives:
    """``tf.distribute.MultiWorkerMirroredStrategy`` (one replica per worker, ring all-reduce over gRPC) from the
    cluster in ``TF_CONFIG``: what the barrier launcher starts. No Horovod needed.

    Collectives are matched across workers by the order in which each worker issues them, so every rank must make
    the same calls in the same order (the loop does) and trace the training step once (it has a fixed signature)."""

    name = "tf.distribute"

    @classmethod
    def connect(cls, cfg, configure: Callable[[int], None]) -> StrategyCollectives:
        return cls(cfg.run.collective_timeout_seconds, configure)

    def __init__(self, timeout_seconds: float, configure: Callable[[int], None]):
        """``configure(local_rank)`` runs first: the strategy initialises TensorFlow's runtime, after which its
        threads can no longer be set."""
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        workers = resolver.cluster_spec().as_dict()["worker"]
        self.rank, self.size = int(resolver.task_id), len(workers)
        hosts = [address.rsplit(":", 1)[0] for address in workers]
        self.local_rank = hosts[: self.rank].count(hosts[self.rank])
        self.local_size = hosts.count(hosts[self.rank])
        configure(self.local_rank)
        # The epoch-end collectives run eagerly on purpose (a few small tensors per epoch): not worth a warning each.
        logging.getLogger("tensorflow").addFilter(lambda record: "eagerly has significant overhead" not in record.msg)
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING,
            timeout_seconds=timeout_seconds,
        )
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver, communication_options=options
        )

    def _on_every_worker(self, fn, *args):
        """``fn`` in the replica context of this worker's one replica (where collectives run), its local result.
        The arguments are placed on the replica's device first: inside a ``tf.function`` a tensor has no device
        until placed, and the all-reduce needs one to know where its result goes."""
        with tf.device(self.strategy.extended.worker_devices[0]):
            args = tuple(tf.identity(arg) for arg in args)
        result = self.strategy.run(fn, args=args)
        return self.strategy.experimental_local_results(result)[0]

    @staticmethod
    def _reduce(op, values):
        return tf.distribute.get_replica_context().all_reduce(op, values)

    def gradients(self, tape: tf.GradientTape, loss, variables) -> list:
        grads = tape.gradient(loss, variables)
        return list(self._on_every_worker(lambda *g: self._reduce(tf.distribute.ReduceOp.MEAN, list(g)), *grads))

    def sum_in_step(self, tensor: tf.Tensor, name: str) -> tf.Tensor:
        """A sum over ranks inside the training step's graph."""
        return self._on_every_worker(lambda x: self._reduce(tf.distribute.ReduceOp.SUM, x), tensor)

    def broadcast_variables(self, variables, root: int = 0) -> None:
        """Root's values everywhere, one ``broadcast`` per dtype."""
        by_dtype: dict[Any, list] = {}
        for variable in variables:
            by_dtype.setdefault(variable.dtype, []).append(variable)
        for dtype, group in by_dtype.items():
            flat = np.concatenate([v.numpy().ravel() for v in group])
            flat = self.broadcast(flat, root, f"variables_{dtype.name}")
            offset = 0
            for variable in group:
                n = int(np.prod(variable.shape))
                variable.assign(flat[offset : offset + n].reshape(variable.shape))
                offset += n

    def sum(self, array, name: str) -> np.ndarray:
        return self._on_every_worker(lambda x: self._reduce(tf.distribute.ReduceOp.SUM, x), tf.constant(array)).numpy()

    def mean(self, array, name: str) -> np.ndarray:
        return self._on_every_worker(lambda x: self._reduce(tf.distribute.ReduceOp.MEAN, x), tf.constant(array)).numpy()

    def gather(self, array, name: str) -> np.ndarray:
        """Every rank's rows, in rank order; ranks may hold different numbers of rows (the counts are exchanged
        first and the rows padded to the largest)."""
        array = np.asarray(array)
        counts = self.sum(np.eye(self.size, dtype=np.int64)[self.rank] * len(array), f"{name}_counts")
        padded = np.zeros((int(counts.max()), *array.shape[1:]), array.dtype)
        padded[: len(array)] = array
        gathered = self._on_every_worker(
            lambda x: tf.distribute.get_replica_context().all_gather(x, axis=0), tf.constant(padded)
        ).numpy()
        rows = gathered.reshape(self.size, len(padded), *array.shape[1:])
        return np.concatenate([rows[r, : counts[r]] for r in range(self.size)])

    def broadcast(self, array, root: int, name: str) -> np.ndarray:
        """A sum in which only ``root`` contributes: the others add -0.0 (x + -0.0 is x for every float x, +0.0
        included) or integer zeros, so every rank gets the root's values bit for bit."""
        array = np.asarray(array)
        nothing = np.full_like(array, -0.0) if np.issubdtype(array.dtype, np.floating) else np.zeros_like(array)
        return self.sum(array if self.rank == root else nothing, name).astype(array.dtype)


class LocalCollectives:
    """One process alone (rank 0 of 1): every collective returns its input. For code run outside a launcher
    (benchmarks' bare loop, tests of the functions that take a ``comm``)."""

    name = "local"
    rank, size, local_rank, local_size = 0, 1, 0, 1

    def gradients(self, tape: tf.GradientTape, loss, variables) -> list:
        return tape.gradient(loss, variables)

    def broadcast_variables(self, variables, root: int = 0) -> None:
        pass

    def sum_in_step(self, tensor: tf.Tensor, name: str) -> tf.Tensor:
        return tensor

    def sum(self, array, name: str) -> np.ndarray:
        return np.asarray(array)

    def mean(self, array, name: str) -> np.ndarray:
        return np.asarray(array)

    def gather(self, array, name: str) -> np.ndarray:
        return np.asarray(array)

    def broadcast(self, array, root: int, name: str) -> np.ndarray:
        return np.asarray(array)
