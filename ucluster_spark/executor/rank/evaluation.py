"""Executor side: what a rank measures and writes: embeddings of its shard, whole-split clustering metrics
(per-rank counts summed over ranks), and rank 0's run directory (model, history, plots, then metrics)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ucluster_spark import plots, store
from ucluster_spark.executor.centroids import ClusterMoments
from ucluster_spark.executor.rank.collectives import Collectives
from ucluster_spark.executor.reader import evaluation_batches
from ucluster_spark.metrics import contingency, summarize
from ucluster_spark.plan import TrainingPlan
from ucluster_spark.schema import CONSTITUENTS, LABEL, MASS, feature_names


def nearest_centroid(z, centroids):
    """Index of each embedding's nearest centroid (numpy)."""
    return np.argmin(np.square(z[:, None, :] - centroids[None, :, :]).sum(axis=-1), axis=1)


@contextlib.contextmanager
def embedded_batches(
    model, url: str, cfg, rank: int, size: int, columns: Sequence[str] = (), sample_fraction: float = 1.0
) -> Iterator[Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]]:
    """(z, {column: values}) batch by batch over this rank's shard (or the fixed subset ``sample_fraction`` keeps),
    one ordered pass in inference mode: memory is a batch's, whatever the shard's size."""
    d = cfg.data
    with evaluation_batches(
        url,
        shard=rank,
        shard_count=size,
        max_constituents=d.max_constituents,
        n_features=len(feature_names(d.feature_set)),
        batch_size=cfg.train.batch_size,  # the training step's memory, not more
        columns=columns,
        reader=d.reader,
        sample_fraction=sample_fraction,
    ) as ds:
        yield (
            (model.backbone(batch[CONSTITUENTS], training=False)["z"].numpy(), {c: batch[c].numpy() for c in columns})
            for batch in ds
        )


def embeddings_of(model, url: str, cfg, rank: int, size: int, columns: Sequence[str] = ()):
    """(z, {column: values}) of this rank's whole shard in memory: for analyses of small datasets (the training
    and evaluation paths stream with ``embedded_batches``)."""
    zs, values = [], {c: [] for c in columns}
    with embedded_batches(model, url, cfg, rank, size, columns) as batches:
        for z, columns_of_batch in batches:
            zs.append(z)
            for c in columns:
                values[c].append(columns_of_batch[c])
    z = np.concatenate(zs) if zs else np.zeros((0, cfg.model.z_dim), np.float32)
    return z, {c: np.concatenate(v) if v else np.zeros(0) for c, v in values.items()}


def evaluate_split(
    model,
    url: str,
    cfg,
    classes: list[str],
    comm: Collectives,
    plot_jets: int = 0,
    sample_fraction: float = 1.0,
    keep_assignments: bool = False,
) -> dict[str, Any]:
    """Clustering metrics over the whole split (or the fixed subset ``sample_fraction`` keeps), streamed batch by
    batch: per-rank contingency matrices and embedding moments summed with one allreduce each, and how far each
    centroid sits from the mean of its jets (``centroid_offsets``; None for an empty cluster) against their spread
    (``cluster_radii``: root-mean-square distance to that mean). With ``plot_jets``, also what the plots need under
    ``"plot"``: per-cluster mass histograms of every jet and a sample of about ``plot_jets`` embeddings gathered from
    all ranks. With ``keep_assignments``, this rank's cluster of each jet, in reading order, under
    ``"assignments"`` (int8; a fixed subset's stays small)."""
    rank, size = comm.rank, comm.size
    k, dim = cfg.model.n_clusters, cfg.model.z_dim
    centroids = model.centroids.numpy()
    take = -(-plot_jets // size)  # this rank's share of the plot sample: its first jets
    counts = np.zeros((k, len(classes)), np.int64)
    moments = np.zeros(1 + 2 * dim, np.float64)
    per_cluster = ClusterMoments.zeros(k, dim)
    histograms = plots.mass_histogram(np.zeros(0), np.zeros(0), k)
    sample: list[np.ndarray] = []
    assignments: list[np.ndarray] = []
    columns = (LABEL, MASS) if plot_jets else (LABEL,)
    with embedded_batches(model, url, cfg, rank, size, columns, sample_fraction) as batches:
        for z, values in batches:
            labels = values[LABEL]
            clusters = nearest_centroid(z, centroids)
            counts += contingency(clusters, labels, k, len(classes))
            z64 = z.astype(np.float64)
            moments += np.concatenate([[len(z)], z64.sum(axis=0), np.square(z64).sum(axis=0)])
            per_cluster.add(z64, clusters)
            if keep_assignments:
                assignments.append(clusters.astype(np.int8))
            if plot_jets:
                histograms += plots.mass_histogram(clusters, values[MASS], k)
                wanted = take - sum(len(s) for s in sample)
                if wanted > 0:
                    sample.append(np.column_stack([z, clusters, labels])[:wanted].astype(np.float32))
    # Collective: counts and moments summed over ranks (exact: no per-batch averaging).
    counts = comm.sum(counts, "eval_counts")
    moments = comm.sum(moments, "eval_moments")
    per_cluster = ClusterMoments.from_flat(comm.sum(per_cluster.flat(), "eval_cluster_moments"), k, dim)
    n = max(moments[0], 1.0)
    mean = moments[1 : 1 + dim] / n
    std = np.sqrt(np.maximum(moments[1 + dim :] / n - mean**2, 0.0))
    result = summarize(counts, classes)
    result["embedding_mean"] = mean.round(6).tolist()
    result["embedding_std"] = std.round(6).tolist()
    result["centroid_offsets"], result["cluster_radii"] = centroid_offsets(centroids, per_cluster)
    if keep_assignments:
        result["assignments"] = np.concatenate(assignments) if assignments else np.zeros(0, np.int8)
    if plot_jets:
        # Collective: whole-split mass histograms and every rank's share of the embedding sample.
        histograms = comm.sum(histograms, "eval_mass_histograms")
        local = np.concatenate(sample) if sample else np.zeros((0, dim + 2), np.float32)
        gathered = comm.gather(local, "eval_plot_sample")
        result["plot"] = {
            "mass_histograms": histograms,
            "z": gathered[:, :dim],
            "cluster": gathered[:, dim].astype(np.int64),
            "label": gathered[:, dim + 1].astype(np.int64),
        }
    return result


def centroid_offsets(centroids: np.ndarray, moments: ClusterMoments) -> tuple[list[float | None], list[float | None]]:
    """Per cluster: the distance from its centroid to the mean of its jets, and the jets' root-mean-square
    distance to that mean. None for an empty cluster."""
    offsets: list[float | None] = []
    radii: list[float | None] = []
    for centroid, n, sums, outer in zip(centroids, moments.counts, moments.sums, moments.outer, strict=True):
        if n == 0:
            offsets.append(None)
            radii.append(None)
            continue
        mean = sums / n
        offsets.append(round(float(np.linalg.norm(centroid - mean)), 6))
        radii.append(round(float(np.sqrt(max(np.trace(outer) / n - mean @ mean, 0.0))), 6))
    return offsets, radii


def draw_run_plots(model, cfg, classes: list[str], metrics: dict, plot: dict, history: list[dict], out: Path) -> None:
    """Rank 0: the pictures of a finished run, from the test split and the epoch history."""
    counts = np.asarray(metrics["confusion_matrix"])
    mapping = {int(k): classes.index(v) for k, v in metrics["cluster_to_class"].items()}
    plots.confusion_matrix(counts, classes, mapping, out / plots.FILE_NAMES["confusion"])
    centroids = model.centroids.numpy()
    plots.embedding(plot["z"], plot["cluster"], plot["label"], classes, centroids, out / plots.FILE_NAMES["embedding"])
    plots.training_curves(history, cfg.train.pretrain_epochs, out / plots.FILE_NAMES["curves"])
    plots.clustering_by_step(history, out / plots.FILE_NAMES["by_step"])
    plots.mass_per_cluster(plot["mass_histograms"], out / plots.FILE_NAMES["mass"], "jet mass per cluster (test split)")


def write_run(model, cfg, plan: TrainingPlan, metrics: dict, plot: dict, history: list[dict]) -> None:
    """Rank 0 only: model weights + config, history, plots, then metrics, each written atomically."""
    layout = store.RunLayout(plan.run_dir)
    with store.atomic_directory(layout.plots, overwrite=True) as staging:
        draw_run_plots(model, cfg, plan.classes, metrics, plot, history, staging)
    with store.atomic_directory(layout.model_dir, overwrite=True) as staging:
        model.save_weights(str(staging / layout.weights.name))
        store.atomic_write_json(staging / layout.model_config.name, cfg.to_dict())
    store.atomic_write_json(layout.history, history)
    data = {k: v for k, v in asdict(plan).items() if k not in ("run_dir", "history", "epochs_done")}
    # Last: metrics.json is what marks the run directory finished.
    store.atomic_write_json(layout.metrics, {**metrics, "data": data})
