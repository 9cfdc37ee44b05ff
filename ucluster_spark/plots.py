"""The pictures people look at, as PNG files: each function takes plain arrays/dicts and a path.

Used by rank 0 at the end of training, by the evaluate job on the driver and by the benchmarks; the inputs
are small summaries (contingency matrix, histograms, a sample of embeddings), never the whole dataset. Every file
is drawn under a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ucluster_spark import store
from ucluster_spark.selection import validation_points

MASS_EDGES = np.linspace(0.0, 300.0, 61)
"""Jet-mass histogram bins (GeV) of the per-cluster mass plot: W, Z and top peaks at 80, 91 and 173."""

FILE_NAMES = {
    "confusion": "confusion_matrix.png",
    "embedding": "embedding.png",
    "curves": "training_curves.png",
    "by_step": "clustering_by_step.png",
    "mass": "mass_per_cluster.png",
}


@contextlib.contextmanager
def figure(path: str | Path, *subplots: int, width: float = 6.0, height: float = 4.5) -> Iterator[Any]:
    """A matplotlib figure (Agg, no display needed) saved atomically to ``path`` when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = subplots or (1, 1)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    try:
        yield fig, axes.ravel()
        final = store.local_path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = store.temporary_sibling(final)
        fig.tight_layout()
        fig.savefig(staging, dpi=110, format="png")
        os.replace(staging, final)
    finally:
        plt.close(fig)


def mass_histogram(cluster: np.ndarray, mass: np.ndarray, n_clusters: int) -> np.ndarray:
    """(n_clusters, len(MASS_EDGES) - 1) counts; masses beyond the last edge go to the last bin. Histograms of
    shards or partitions add up."""
    bins = np.clip(np.searchsorted(MASS_EDGES, mass, side="right") - 1, 0, len(MASS_EDGES) - 2)
    counts = np.zeros((n_clusters, len(MASS_EDGES) - 1), np.int64)
    np.add.at(counts, (np.asarray(cluster, np.int64), bins), 1)
    return counts


def confusion_matrix(counts: np.ndarray, class_names: Sequence[str], mapping: dict[int, int], path) -> Path:
    """Clusters x true classes, clusters ordered by the class the Hungarian matching gave them (matched cells on
    the diagonal), coloured by the fraction of each class in each cluster, annotated with counts."""
    counts = np.asarray(counts)
    order = sorted(range(counts.shape[0]), key=lambda k: mapping.get(k, counts.shape[1] + k))
    shown = counts[order]
    fractions = shown / np.maximum(shown.sum(axis=0, keepdims=True), 1)
    matched = sum(counts[k, c] for k, c in mapping.items())
    with figure(path) as (fig, (ax,)):
        image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(shown.shape[0]):
            for j in range(shown.shape[1]):
                colour = "white" if fractions[i, j] > 0.6 else "black"
                ax.text(j, i, f"{shown[i, j]}\n{fractions[i, j]:.0%}", ha="center", va="center", color=colour)
        ax.set_xticks(range(len(class_names)), list(class_names))
        ax.set_yticks(range(len(order)), [f"cluster {k}" for k in order])
        ax.set_xlabel("true class")
        ax.set_title(f"clustering accuracy {matched / max(counts.sum(), 1):.3f} ({counts.sum()} jets)")
        fig.colorbar(image, ax=ax, label="fraction of the class")
    return store.local_path(path)


def embedding(
    z: np.ndarray,
    cluster: np.ndarray,
    labels: np.ndarray | None,
    class_names: Sequence[str],
    centroids: np.ndarray,
    path,
) -> Path:
    """The embedding projected to its first two principal components, coloured by cluster and (if labels exist)
    by true class, with the centroids. A collapsed embedding shows up as a line or a point."""
    from sklearn.decomposition import PCA

    z = np.asarray(z, np.float64)
    pca = PCA(n_components=min(2, z.shape[1], len(z))).fit(z)
    xy, centres = pca.transform(z), pca.transform(np.asarray(centroids, np.float64))
    if xy.shape[1] == 1:
        xy, centres = np.c_[xy, np.zeros(len(xy))], np.c_[centres, np.zeros(len(centres))]
    panels = [("cluster", cluster, [f"cluster {k}" for k in range(len(centroids))])]
    if labels is not None:
        panels.append(("true class", labels, list(class_names)))
    explained = ", ".join(f"{v:.0%}" for v in pca.explained_variance_ratio_)
    with figure(path, 1, len(panels)) as (fig, axes):
        for ax, (title, colour_by, names) in zip(axes, panels, strict=True):
            for index, name in enumerate(names):
                chosen = np.asarray(colour_by) == index
                ax.scatter(xy[chosen, 0], xy[chosen, 1], s=4, alpha=0.5, label=f"{name} ({chosen.sum()})")
            ax.scatter(centres[:, 0], centres[:, 1], marker="X", s=120, c="black", label="centroids")
            ax.set_xlabel("PC 1")
            ax.set_ylabel("PC 2")
            ax.set_title(f"embedding z by {title} ({len(z)} jets; PCs explain {explained})", fontsize=9)
            legend = ax.legend(fontsize=7)
            for handle in legend.legend_handles:  # equal-sized markers: the points are tiny, the centroids large
                handle.set_sizes([30])
    return store.local_path(path)


def training_curves(history: list[dict[str, Any]], pretrain_epochs: int, path) -> Path:
    """Losses, validation clustering accuracy / NMI and the embedding's spread per epoch (a dimension whose
    spread falls to zero is dead; all of them falling is a collapse)."""
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] + 1 for h in history]
    with figure(path, 1, 3, width=5.0) as (fig, (losses, quality, spread)):
        for key, label in (("focal_loss", "focal (aux)"), ("clustering_loss_per_jet", "clustering, per jet")):
            losses.plot(epochs, [h[key] for h in history], marker=".", label=label)
        losses.set_yscale("symlog", linthresh=1e-3)
        losses.set_title("training losses (means over ranks)")
        scored = [h for h in history if "val_clustering_accuracy" in h]
        for key, label in (("val_clustering_accuracy", "clustering accuracy"), ("val_nmi", "NMI")):
            quality.plot([h["epoch"] + 1 for h in scored], [h[key] for h in scored], marker=".", label=label)
        quality.set_ylim(0.0, 1.0)
        quality.set_title("validation (Hungarian matching, whole split)")
        stds = [h["val_embedding_std"] for h in history if "val_embedding_std" in h]
        if stds:
            for dim, values in enumerate(np.asarray(stds).T):
                spread.plot(epochs[: len(values)], values, marker=".", label=f"z[{dim}]")
        spread.set_yscale("log")
        spread.set_title("validation embedding std per dimension")
        for ax in (losses, quality, spread):
            ax.set_xlim(0.5, max(epochs, default=1) + 0.5)  # the same epochs on every panel
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if 0 < pretrain_epochs < (epochs[-1] if epochs else 0):
                ax.axvline(pretrain_epochs + 0.5, ls="--", color="grey", label="clustering loss on")
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
    return store.local_path(path)


def clustering_by_step(history: list[dict[str, Any]], path, reference: Sequence[tuple[float, float]] = ()) -> Path:
    """The clustering phase by optimizer step, from the validation points (``history[*].validations``): accuracy
    (validation, and test where it was scored; ``reference``: (step, accuracy) pairs of another run to compare
    with), the distance of each centroid to the mean of its jets against the jets' own spread, and the share of
    jets that changed cluster between points (what the ``assignments`` stop rule reads)."""
    points = validation_points(history)
    steps = [p["clustering_step"] for p in points]
    stopped = next((h for h in history if h.get("stopped_by")), None)
    with figure(path, 1, 3, width=5.0) as (fig, (quality, offsets, change)):
        quality.plot(steps, [p["val_clustering_accuracy"] for p in points], marker=".", label="validation")
        scored = [p for p in points if "test_clustering_accuracy" in p]
        if scored:
            quality.plot([p["clustering_step"] for p in scored], [p["test_clustering_accuracy"] for p in scored],
                         marker=".", label="test (diagnostic)")  # fmt: skip
        if reference:
            quality.plot(*zip(*reference, strict=True), marker="s", ls="--", color="grey", label="reference run")
        quality.set_ylim(0.3, 1.0)
        quality.set_title("clustering accuracy (Hungarian)")
        for k in range(len(points[0]["centroid_offsets"]) if points else 0):
            line = offsets.plot(steps, [_nan(p["centroid_offsets"][k]) for p in points], marker=".",
                                label=f"cluster {k}: centroid to its jets' mean")[0]  # fmt: skip
            offsets.plot(steps, [_nan(p["cluster_radii"][k]) for p in points], ls=":", color=line.get_color(),
                         label=f"cluster {k}: jets' rms radius")  # fmt: skip
        offsets.set_yscale("log")
        offsets.set_title("centroids against their jets (validation)")
        moved = [p for p in points if p.get("assignment_change") is not None]
        change.plot([p["clustering_step"] for p in moved], [max(p["assignment_change"], 1e-5) for p in moved],
                    marker=".")  # fmt: skip
        change.set_yscale("log")
        change.set_title("share of validation jets that changed cluster")
        for ax in (quality, offsets, change):
            ax.set_xlabel("clustering steps")
            if stopped and points:
                at = stopped["validations"][-1]["clustering_step"] if stopped.get("validations") else steps[-1]
                ax.axvline(at, ls="--", color="grey", label="stop rule")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    return store.local_path(path)


def clustering_comparison(
    runs: dict[str, list[dict[str, Any]]], path, reference: Sequence[tuple[float, float]] = ()
) -> Path:
    """Several runs' validation points (name -> points): validation and test accuracy by clustering step beside a
    reference run's (step, accuracy) pairs, and each run's largest centroid offset in units of its cluster's
    rms radius."""
    with figure(path, 1, 2, width=6.0) as (fig, (accuracy, offsets)):
        for i, (name, points) in enumerate(runs.items()):
            steps = [p["clustering_step"] for p in points]
            accuracy.plot(steps, [p["val_clustering_accuracy"] for p in points], marker=".", color=f"C{i}",
                          label=f"{name} (validation)")  # fmt: skip
            tested = [p for p in points if p.get("test_clustering_accuracy") is not None]
            accuracy.plot([p["clustering_step"] for p in tested], [p["test_clustering_accuracy"] for p in tested],
                          ls=":", color=f"C{i}", label=f"{name} (test)")  # fmt: skip
            worst = [
                max((o / r for o, r in zip(p["centroid_offsets"], p["cluster_radii"], strict=True) if o and r),
                    default=np.nan)
                for p in points
            ]  # fmt: skip
            offsets.plot(steps, worst, marker=".", color=f"C{i}", label=name)
        if reference:
            accuracy.plot(*zip(*reference, strict=True), marker="s", ls="--", color="grey", label="reference run")
        accuracy.set_xscale("symlog", linthresh=100)
        accuracy.set_title("clustering accuracy by clustering step")
        offsets.set_yscale("log")
        offsets.set_title("largest centroid offset / its cluster's rms radius")
        for ax in (accuracy, offsets):
            ax.set_xlabel("clustering steps")
            ax.legend(fontsize=7)
    return store.local_path(path)


def _nan(value: float | None) -> float:
    return np.nan if value is None else value


def mass_per_cluster(histograms: np.ndarray, path, title: str = "") -> Path:
    """Jet-mass distribution of each cluster (``mass_histogram`` counts), as step histograms."""
    histograms = np.asarray(histograms)
    with figure(path) as (fig, (ax,)):
        for k, counts in enumerate(histograms):
            ax.stairs(counts, MASS_EDGES, label=f"cluster {k} ({counts.sum()} jets)", linewidth=1.5)
        ax.set_xlabel(f"jet mass [GeV] (last bin: >= {MASS_EDGES[-2]:.0f})")
        ax.set_ylabel(f"jets / {MASS_EDGES[1] - MASS_EDGES[0]:.0f} GeV")
        ax.set_title(title or "jet mass per cluster")
        ax.legend(fontsize=8)
    return store.local_path(path)
