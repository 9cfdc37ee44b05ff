"""Executor side: the terms of the training loss, one module each, summed by the train step (``rank/step.py``).

A term is a function of one ``StepView`` returning a scalar tensor, or a ``TermValue`` when what the log shows
differs from what is weighted (the clustering loss: summed or averaged over the batch, shown per jet). The step
multiplies it by the weight ``registry.LOSS_TERMS`` names and adds it up; the registry says which terms act only
in the clustering phase. The step is traced without AutoGraph: a term branches on a tensor with ``tf.where`` or
``tf.cond``, never a Python ``if``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import tensorflow as tf


@dataclass(frozen=True)
class StepView:
    """What a loss term sees of one training step, inside its ``tf.function``.

    Args:
        batch: the batch's columns (``schema.CONSTITUENTS`` and the auxiliary mass columns), each (B, ...).
        outputs: the model's training-mode outputs: ``z`` (B, D), ``distances`` (B, K) to the centroids,
            ``aux_logits`` (B, targets, mass bins).
        centroids: the (K, D) centroid variable.
        alpha: the assignment's hardness now (0 in pre-training).
        cfg: the whole ``Config``.
    """

    batch: dict[str, tf.Tensor]
    outputs: dict[str, tf.Tensor]
    centroids: tf.Variable
    alpha: tf.Variable
    cfg: Any


class TermValue(NamedTuple):
    """``loss``: what the term's weight multiplies; ``shown``: what the log and ``history.json`` record."""

    loss: tf.Tensor
    shown: tf.Tensor
