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
    """How an epoch is cut into steps: every rank takes ``steps`` steps (no rank waits on another's collective). A
    whole pass takes ``pass_steps`` and puts every jet of every shard in exactly one of them; shards differ by up to
    a row group, so rank r's batches hold ``shard_r // pass_steps`` or one more jet, at most ``batch_size``. With
    ``train.steps_per_epoch`` the epoch is the first ``steps`` of such a pass."""

    shard_sizes: tuple[int, ...]
    pass_steps: int
    steps: int

    @classmethod
    def for_shards(cls, shard_sizes: list[int], batch_size: int, max_steps: int = 0) -> EpochPlan:
        pass_steps = -(-max(shard_sizes) // batch_size)
        if min(shard_sizes) < pass_steps:
            raise ValueError(
                f"training shards of {shard_sizes} jets are too uneven for batches of {batch_size}: the largest needs "
                f"{pass_steps} steps and the smallest cannot fill them; lower train.batch_size, use fewer ranks or "
                "write more, smaller files (data.files_per_split)"
            )
        return cls(tuple(shard_sizes), pass_steps, min(pass_steps, max_steps) if max_steps else pass_steps)

    @property
    def whole_pass(self) -> bool:
        return self.steps == self.pass_steps

    @property
    def jets(self) -> int:
        """Jets trained on in one epoch, all ranks."""
        return sum(sum(self.batch_sizes(r)) for r in range(len(self.shard_sizes)))

    def batch_sizes(self, rank: int) -> list[int]:
        base, extra = divmod(self.shard_sizes[rank], self.pass_steps)
        return ([base + 1] * extra + [base] * (self.pass_steps - extra))[: self.steps]

    def gradient_weights(self, rank: int) -> list[float]:
        """Per step, ranks x this rank's jets / all ranks' jets: after Horovod's average over ranks the gradient is
        the mean over every jet of the step, however the batch sizes differ."""
        per_rank = [self.batch_sizes(r) for r in range(len(self.shard_sizes))]
        totals = [sum(step) for step in zip(*per_rank, strict=True)]
        return [len(per_rank) * n / total for n, total in zip(per_rank[rank], totals, strict=True)]


def epoch_eval_fraction(max_jets: int, split_jets: int) -> float:
    """The fraction of a split the per-epoch measurements use (``train.epoch_eval_max_jets``; 1: all)."""
    return min(1.0, max_jets / split_jets) if max_jets and split_jets else 1.0


def trained_alpha(history: list[dict[str, Any]], alpha_start: float) -> float:
    """The α of a finished run's last epoch (the hardness its model was trained to), for its soft assignments;
    ``alpha_start`` if the clustering loss never ran."""
    last = history[-1].get("alpha", 0.0) if history else 0.0
    return float(last) if last > 0 else alpha_start
