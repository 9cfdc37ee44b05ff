"""A checkpoint of the original UCluster code (TensorFlow 1, variables by name) as a finished run of this project.

The original jet model (V. Mikuni's UCluster, ``models/gapnet_classify.py``) and this project's ABCnet are the same
function when this project runs with the as-run settings (``AS_RUN``); only the variables are named and laid out
differently. Its 1x1 convolutions are [1, 1, in, out] kernels (ours: Dense [in, out]), and its per-particle MLP and
embedding convolutions carry a bias before their batch norm, which ours leave out: a bias b before a batch norm is
the same function with the moving mean lowered by b (in training mode the batch mean absorbs it exactly), so it is
folded into the moving mean. The original's batch-norm epsilon (1e-3) is Keras' default.

Imports TensorFlow: used by the import job (one process, no Spark) and the tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ucluster_spark import store
from ucluster_spark.config import Config
from ucluster_spark.errors import BadInput, InputMissing

log = logging.getLogger(__name__)

AS_RUN = ["model.mask_padding=false", "loss.focal_epsilon=1e-9"]
"""Overrides of this project's defaults that make its model and loss the original's as it ran: padded slots
processed like particles (masked only in the first kNN search), and the focal loss's epsilon."""

MOVING_MEAN = "moments/Squeeze/ExponentialMovingAverage"
MOVING_VARIANCE = "moments/Squeeze_1/ExponentialMovingAverage"


class CheckpointMismatch(BadInput):
    """A checkpoint whose variables or shapes do not fit the model; the message names the first mismatch."""


Source = tuple[str, Callable[[dict], np.ndarray]]
"""The original's variable a weight comes from, and how to turn the checkpoint's values into it."""


def _batch_norm(ours: str, scope: str, fold_bias: str = "") -> dict[str, Source]:
    """Our batch norm ``ours`` from the original's ``scope/bn`` (TF1 names its averages by the scope twice);
    ``fold_bias``: the bias of the convolution before it, folded into the moving mean."""
    bn, ours = f"{scope}/bn", f"{ours}/" if ours else ""
    mean, variance = f"{bn}/{bn}/{MOVING_MEAN}", f"{bn}/{bn}/{MOVING_VARIANCE}"
    return {
        f"{ours}gamma": _same(f"{bn}/gamma"),
        f"{ours}beta": _same(f"{bn}/beta"),
        f"{ours}moving_mean": (mean, (lambda v: v[mean] - v[fold_bias]) if fold_bias else (lambda v: v[mean])),
        f"{ours}moving_variance": _same(variance),
    }


def _kernel(name: str) -> Source:
    """A [1, 1, in, out] convolution kernel or an [in, out] matrix, as a Dense kernel [in, out]."""
    return name, lambda v: v[name].reshape(v[name].shape[-2:])


def _same(name: str) -> Source:
    return name, lambda v: v[name]


def _dense(ours: str, scope: str, bias: bool = True) -> dict[str, Source]:
    """Our Dense ``ours`` ("": the layer itself) from the original's convolution or fully connected ``scope``."""
    ours = f"{ours}/" if ours else ""
    return {f"{ours}kernel": _kernel(f"{scope}/weights"), **({f"{ours}bias": _same(f"{scope}/biases")} if bias else {})}


def _gap_layer(index: int, output_bias: str) -> dict[str, Source]:
    """GAPLayer ``index`` (0 or 1): its self transform, self logit, edge transform and neighbour logit, each with
    its batch norm, and the output bias (a separate ``BiasAdd`` in the original's graph)."""
    scope = f"layerfilter{index}"
    parts = (
        ("self_transform", "self_norm", "newfea_conv_head_0"),
        ("self_logit", "self_logit_norm", "self_att_conv_head_0"),
        ("edge_transform", "edge_norm", "edgefea_0"),
        ("neighbour_logit", "neighbour_logit_norm", "neib_att_conv_head_0"),
    )
    sources: dict[str, Source] = {"output_bias": _same(output_bias)}
    for dense, norm, theirs in parts:
        sources |= _dense(dense, f"{scope}_{theirs}", bias=dense != "self_transform")
        sources |= _batch_norm(norm, f"{scope}_{theirs}")
    return sources


def _particle_dense(scope: str) -> dict[str, Source]:
    return {**_dense("dense", scope, bias=False), **_batch_norm("norm", scope, fold_bias=f"{scope}/biases")}


def variable_map(cfg: Config) -> dict[str, dict[str, Source]]:
    """Each layer of this project's model (by name) -> each of its weights (by the name inside the layer) -> its
    source in the original. The original has exactly two MLPs of two layers and a head of two hidden layers."""
    m = cfg.model
    if len(m.mlp1) != 2 or len(m.mlp2) != 2 or len(m.aux_hidden) != 2 or not m.aux_batch_norm:
        raise BadInput("the original UCluster model has MLPs of two layers and a two-layer head with batch norm")
    return {
        "gap1": _gap_layer(0, "BiasAdd/biases"),
        "mlp1_0": _particle_dense("gapnet01"),
        "mlp1_1": _particle_dense("gapnet02"),
        "gap2": _gap_layer(1, "BiasAdd_1/biases"),
        "mlp2_0": _particle_dense("gapnet11"),
        "mlp2_1": _particle_dense("gapnet12"),
        "embedding_conv": _particle_dense("agg"),
        "aux_0": _dense("", "fc1"),
        "aux_norm_0": _batch_norm("", "fc1"),
        "aux_1": _dense("", "fc2"),
        "aux_norm_1": _batch_norm("", "fc2"),
        "aux_dense": _dense("", "fc3"),
    }


def _weight_key(weight, layer_name: str) -> str:
    """``gap1/self_norm/gamma:0`` -> ``self_norm/gamma``: a weight's name inside its layer."""
    parts = weight.name.removesuffix(":0").split("/")
    return "/".join(parts[parts.index(layer_name) + 1 :])


def read_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every variable of a TF1 checkpoint (``PREFIX.index`` + data files), by name."""
    import tensorflow as tf

    prefix = str(store.local_path(prefix))
    if not Path(f"{prefix}.index").is_file():
        raise InputMissing(f"{prefix}: no checkpoint here (expected {prefix}.index beside its data files)")
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as err:
        raise InputMissing(f"{prefix}: not a readable TensorFlow checkpoint ({err.__class__.__name__})") from None
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def original_weights(values: dict[str, np.ndarray], model, source: str) -> list[np.ndarray]:
    """The checkpoint's variables as ``model.get_weights()`` lists them (centroids from ``mu``, the k-means counts
    zero). Refused at the first variable that is missing or has another shape, naming it."""
    layers = {layer.name: layer for layer in model.backbone.layers}
    ours: dict[int, np.ndarray] = {}
    for layer_name, sources in variable_map(Config.from_dict(model.cfg_dict)).items():
        for weight in layers[layer_name].weights:
            name, convert = sources[_weight_key(weight, layer_name)]
            ours[id(weight)] = _checked(values, name, convert, tuple(weight.shape), source)
    ours[id(model.centroids)] = _checked(values, "mu", lambda v: v["mu"], tuple(model.centroids.shape), source)
    ours[id(model.centroid_counts)] = np.zeros(model.centroid_counts.shape, np.float32)
    return [ours[id(w)] for w in model.weights]


def _checked(values: dict, name: str, convert: Callable[[dict], np.ndarray], shape: tuple, source: str) -> np.ndarray:
    if name not in values:
        raise CheckpointMismatch(f"{source}: variable {name} is missing (the original UCluster jet model has it)")
    try:
        value = np.asarray(convert(values), np.float32)
    except KeyError as err:
        raise CheckpointMismatch(f"{source}: variable {err.args[0]} is missing (needed with {name})") from None
    except ValueError:  # a kernel of another size does not reshape: reported below by its shape
        value = values[name]
    if value.shape != shape:
        raise CheckpointMismatch(
            f"{source}: variable {name} has shape {list(values[name].shape)}, this model needs {list(shape)} "
            "(different layer sizes, features or number of clusters: set them with section.key=value overrides)"
        )
    return value


def import_checkpoint(
    prefix: str | Path, run_dir: str | Path, overrides: list[str] | None = None, alpha: float = 0.0,
    overwrite: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Write the checkpoint at ``prefix`` as a finished run directory (model weights and config, config.yaml,
    history.json, metrics.json last). ``overrides``: settings beyond ``AS_RUN`` (layer sizes, data settings);
    ``alpha``: the assignment hardness it was trained to (0: the config's ``loss.alpha_start``)."""
    from ucluster_spark import config

    cfg = config.load(None, [*AS_RUN, *(overrides or [])])
    layout = store.RunLayout(run_dir)
    with store.exclusive_output(layout.root, "run directory", "RUN_DIR"):
        store.check_replaceable(layout.root, "run directory", lambda p: (p / layout.metrics.name).is_file(), overwrite)
        return _write_run(cfg, prefix, layout, alpha, overwrite)


def _write_run(cfg: Config, prefix: str | Path, layout: store.RunLayout, alpha: float, overwrite: bool) -> dict:
    from ucluster_spark.executor.model import build_model

    source = str(store.local_path(prefix))
    values = read_checkpoint(prefix)
    model = build_model(cfg)
    model.set_weights(original_weights(values, model, source))
    steps = int(values["Variable"]) if "Variable" in values else None  # the original's global step
    provenance = {"checkpoint": source, "global_step": steps, "format": "original UCluster (TensorFlow 1)"}
    history = [{"epoch": 0, "alpha": float(alpha), "imported_from": provenance}] if alpha > 0 else []
    metrics = {"imported_from": provenance, "centroids": model.centroids.numpy().tolist(), "data": None}
    with store.atomic_directory(layout.root, overwrite=overwrite) as staging:
        staged = store.RunLayout(staging)
        staged.model_dir.mkdir()
        model.save_weights(str(staged.weights))
        store.atomic_write_json(staged.model_config, cfg.to_dict())
        cfg.dump(staged.config)
        store.atomic_write_json(staged.history, history)
        store.atomic_write_json(staged.metrics, metrics)  # last: marks the run finished
    log.info("imported %s into %s (%d variables)", source, layout.root, len(model.weights))
    return {"run": str(layout.root), **provenance, "centroids": metrics["centroids"], "alpha": alpha or None}
