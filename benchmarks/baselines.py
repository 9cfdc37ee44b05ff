"""Reference points for the clustering accuracy: k-means and a Gaussian mixture on classic jet observables.

Fitted on the training split, scored on the evaluation split with the same Hungarian metric as UCluster. Only the
few scalar columns are read (pyarrow), never the constituents, so this fits in memory for large datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ucluster_spark import schema, store
from ucluster_spark.metrics import contingency, summarize

JET_OBSERVABLES = (schema.MASS, schema.SD_MASS, schema.TAU21, schema.TAU32, schema.N_CONSTITUENTS)


def read_observables(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(jets x observables, labels) of one split; jets with a missing observable are refused, not imputed."""
    import pyarrow.parquet as pq

    path = store.local_path(root) / split
    table = pq.read_table(path, columns=[*JET_OBSERVABLES, schema.LABEL])
    frame = table.to_pandas()
    missing = [c for c in JET_OBSERVABLES if frame[c].isna().any()]
    if missing:
        raise ValueError(f"{path}: observables {missing} are missing for some jets; the baseline needs all of them")
    return frame[list(JET_OBSERVABLES)].to_numpy(np.float64), frame[schema.LABEL].to_numpy(np.int64)


def observable_baselines(
    root: str | Path, classes: list[str], seed: int = 0, evaluate_split: str = "test"
) -> dict[str, Any]:
    """Clustering metrics of k-means and of a Gaussian mixture on standardised jet observables, and the accuracy of
    a supervised classifier on the same observables as an upper reference."""
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = read_observables(root, "train")
    x_eval, y_eval = read_observables(root, evaluate_split)
    scaler = StandardScaler().fit(x_train)
    k = len(classes)
    models = {
        "kmeans": KMeans(n_clusters=k, n_init=10, random_state=seed),
        "gaussian_mixture": GaussianMixture(n_components=k, covariance_type="full", n_init=5, random_state=seed),
    }
    results: dict[str, Any] = {"observables": list(JET_OBSERVABLES), "split": evaluate_split}
    for name, model in models.items():
        model.fit(scaler.transform(x_train))
        clusters = model.predict(scaler.transform(x_eval))
        summary = summarize(contingency(clusters, y_eval, k, k), classes)
        results[name] = {key: summary[key] for key in ("clustering_accuracy", "nmi", "ari", "n_jets")}
    # Upper reference, trained WITH labels: what the same observables allow at best.
    results["supervised_gradient_boosting_accuracy"] = supervised_accuracy(x_train, y_train, x_eval, y_eval, seed)
    return results


def supervised_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, seed: int
) -> float:
    """Accuracy of a gradient-boosted classifier trained WITH labels: how much class information x carries."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    x_train, x_eval = (np.asarray(x, np.float64).reshape(len(x), -1) for x in (x_train, x_eval))
    model = HistGradientBoostingClassifier(random_state=seed).fit(x_train, y_train)
    return float(np.mean(model.predict(x_eval) == y_eval))


def aux_target_ceiling(root: str | Path, columns: list[str], seed: int = 0, evaluate_split: str = "test") -> float:
    """Best accuracy reachable from the auxiliary targets' observables alone (supervised): an embedding trained
    only to predict them cannot be expected to cluster better than this."""
    x_train, y_train = read_observables(root, "train")
    x_eval, y_eval = read_observables(root, evaluate_split)
    i = [JET_OBSERVABLES.index(c) for c in columns]
    return supervised_accuracy(x_train[:, i], y_train, x_eval[:, i], y_eval, seed)
