"""Both sides: what the driver resolves before launching and how an epoch is cut into steps (plain values, no
TensorFlow): the driver builds a ``TrainingPlan``, every rank rebuilds it and the same ``EpochPlan``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainingPlan:
    """What the driver resolved before launching: where the splits are and how many jets they hold."""

    train_url: str
    val_url: str
    test_url: str
    n_train: int
    n_val: int
    n_test: int
    classes: list[str]
    run_dir: str
    resume_from: str = ""
    """Checkpoint directory to continue from (empty: start fresh)."""
    epochs_done: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    """Epochs completed and their records, from the checkpoint when resuming."""


@dataclass(frozen=True)
class EpochPlan:
    """How an epoch is cut into steps: every rank takes ``steps`` steps (no rank waits on another's collective) and
    every jet of every shard is in exactly one of them. Shards differ by up to a row group, so rank r's batches
    hold ``shard_r // steps`` or one more jet, at most ``batch_size``."""

    shard_sizes: tuple[int, ...]
    steps: int

    @classmethod
    def for_shards(cls, shard_sizes: list[int], batch_size: int) -> EpochPlan:
        steps = -(-max(shard_sizes) // batch_size)
        if min(shard_sizes) < steps:
            raise ValueError(
                f"training shards of {shard_sizes} jets are too uneven for batches of {batch_size}: the largest needs "
                f"{steps} steps and the smallest cannot fill them; lower train.batch_size, use fewer ranks or write "
                "more, smaller files (data.files_per_split)"
            )
        return cls(tuple(shard_sizes), steps)

    @property
    def jets(self) -> int:
        return sum(self.shard_sizes)

    def batch_sizes(self, rank: int) -> list[int]:
        base, extra = divmod(self.shard_sizes[rank], self.steps)
        return [base + 1] * extra + [base] * (self.steps - extra)

    def gradient_weights(self, rank: int) -> list[float]:
        """Per step, ranks x this rank's jets / all ranks' jets: after Horovod's average over ranks the gradient is
        the mean over every jet of the step, however the batch sizes differ."""
        per_rank = [self.batch_sizes(r) for r in range(len(self.shard_sizes))]
        totals = [sum(step) for step in zip(*per_rank, strict=True)]
        return [len(per_rank) * n / total for n, total in zip(per_rank[rank], totals, strict=True)]
