"""The jet parquet schema: column names, feature sets and class names shared by every stage.

One row per jet. The model input ``constituents`` is a flat float32 array of ``max_constituents x n_features``
values, particle-major (particle 0's features first), pT-ordered, padded particles exactly zero.
"""

from __future__ import annotations

from typing import Final

KNOWN_CLASSES: Final[tuple[str, ...]] = ("g", "q", "w", "z", "t", "qcd", "hbb", "hcc", "hgg", "h4q", "hqql")
"""hls4ml's classes in its order (``j_g j_q j_w j_z j_t``), then JetClass's others (its QCD jets are quarks and
gluons together; the Higgs decays). Labels are indices into the configured class list."""

FEATURE_SETS: Final[dict[str, tuple[str, ...]]] = {
    # The 8 per-particle inputs of UCluster's jet model, in its order (hls4ml constituent columns).
    "ucluster8": (
        "etarel",
        "phirel",
        "log_ptrel",
        "deltaR",
        "log_e",
        "log_erel",
        "log_pt",
        "costhetarel",
    ),
}
KNN_COORDINATES: Final[tuple[str, str]] = ("etarel", "phirel")
"""The first GAPLayer finds neighbours in the (eta, phi) plane relative to the jet axis."""

# Column names.
JET_ID: Final = "jet_id"
LABEL: Final = "label"
LABEL_NAME: Final = "label_name"
PT: Final = "pt"
ETA: Final = "eta"
PHI: Final = "phi"
MASS: Final = "mass"
SD_MASS: Final = "sd_mass"
TAU21: Final = "tau21"
TAU32: Final = "tau32"
N_CONSTITUENTS: Final = "n_constituents"
CONSTITUENTS: Final = "constituents"
SPLIT: Final = "split"

COLUMNS: Final[tuple[str, ...]] = (
    JET_ID,
    LABEL,
    LABEL_NAME,
    PT,
    ETA,
    PHI,
    MASS,
    SD_MASS,
    TAU21,
    TAU32,
    N_CONSTITUENTS,
    CONSTITUENTS,
)
"""Column order of a prepared dataset (``spark_schema`` lists the same names with their types)."""

AUX_MASS_COLUMNS: Final[tuple[str, ...]] = (MASS, SD_MASS)
"""Jet masses that can be binned into UCluster's auxiliary targets (computed from the constituents, not labels)."""

SPLITS: Final[tuple[str, ...]] = ("train", "val", "test")
METADATA_FILE: Final = "_ucluster_dataset.json"
"""Written last into a dataset directory: its presence marks the dataset complete."""


# Columns of the evaluate job's output, OUT_DIR/assignments.
CLUSTER: Final = "cluster"
EMBEDDING: Final = "embedding"
DISTANCES: Final = "distances"
SOFT_ASSIGNMENT: Final = "soft_assignment"
ASSIGNMENT_COLUMNS: Final[tuple[str, ...]] = (
    JET_ID, SPLIT, LABEL, MASS, CLUSTER, EMBEDDING, DISTANCES, SOFT_ASSIGNMENT
)  # fmt: skip
"""The jet's id, split, true label (null if unknown) and mass, then the model's view of it: the nearest centroid,
the embedding z, the squared distance to every centroid and the soft assignment (softmax of -alpha x distance)."""


def feature_names(feature_set: str) -> tuple[str, ...]:
    try:
        return FEATURE_SETS[feature_set]
    except KeyError:
        raise ValueError(f"unknown feature set {feature_set!r}; known: {sorted(FEATURE_SETS)}") from None


def knn_coordinate_indices(feature_set: str) -> list[int]:
    names = feature_names(feature_set)
    missing = [c for c in KNN_COORDINATES if c not in names]
    if missing:
        raise ValueError(f"feature set {feature_set!r} lacks the kNN coordinates {missing}")
    return [names.index(c) for c in KNN_COORDINATES]


def spark_schema():
    """The Spark schema of a prepared dataset (pyspark imported lazily: executors of TF code need not)."""
    from pyspark.sql import types as T

    return T.StructType(
        [
            T.StructField(JET_ID, T.StringType(), False),
            T.StructField(LABEL, T.IntegerType(), True),
            T.StructField(LABEL_NAME, T.StringType(), True),
            T.StructField(PT, T.FloatType(), False),
            T.StructField(ETA, T.FloatType(), False),
            T.StructField(PHI, T.FloatType(), True),
            T.StructField(MASS, T.FloatType(), False),
            T.StructField(SD_MASS, T.FloatType(), True),
            T.StructField(TAU21, T.FloatType(), True),
            T.StructField(TAU32, T.FloatType(), True),
            T.StructField(N_CONSTITUENTS, T.IntegerType(), False),
            T.StructField(CONSTITUENTS, T.ArrayType(T.FloatType(), False), False),
        ]
    )


def assignment_spark_schema():
    """The Spark schema of ``OUT_DIR/assignments`` (``ASSIGNMENT_COLUMNS``)."""
    from pyspark.sql import types as T

    floats = T.ArrayType(T.FloatType(), False)
    return T.StructType(
        [
            T.StructField(JET_ID, T.StringType(), False),
            T.StructField(SPLIT, T.StringType(), False),
            T.StructField(LABEL, T.IntegerType(), True),
            T.StructField(MASS, T.FloatType(), False),
            T.StructField(CLUSTER, T.IntegerType(), False),
            T.StructField(EMBEDDING, floats, False),
            T.StructField(DISTANCES, floats, False),
            T.StructField(SOFT_ASSIGNMENT, floats, False),
        ]
    )
