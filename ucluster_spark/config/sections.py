"""The settings of every stage, one dataclass per section of ``conf/*.yaml`` (defaults: the original UCluster as
it ran). The rules between settings are in ``rules.py``; reading files and overrides in ``loading.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataConfig:
    """Where the jets come from and how they are laid out."""

    path: str = ""
    """Prepared dataset directory (parquet). Empty: generate a small Pythia sample into ``generated_root``."""
    generated_root: str = "data/generated"
    """Cache of generated datasets, one sub-directory per generation setting (reused when complete)."""
    classes: list[str] = field(default_factory=lambda: ["w", "z", "t"])
    jets_per_class: int = 1000
    generation_seed: int = 1
    tasks_per_class: int = 2
    """Spark tasks (each with its own Pythia seed) per class when generating."""
    mass_window: list[float] = field(default_factory=list)
    """[LO, HI] GeV: keep jets with LO < mass < HI (the plain jet mass; the original UCluster cut: [10, 200]) when
    a dataset is generated or prepared from files; empty: no cut. Generation still makes exactly
    ``jets_per_class`` jets per class. A dataset given by ``path`` is used as it is."""
    underlying_event: bool = True
    """Generated jets include the underlying event (Pythia multi-parton interactions); false: ``PartonLevel:MPI =
    off``."""
    max_constituents: int = 100
    feature_set: str = "ucluster8"
    split_fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.7, "val": 0.1, "test": 0.2})
    files_per_split: int = 4
    """Parquet files per split (at least; one row group each): each rank reads whole row groups, so keep this >=
    the number of ranks. A split too large for that many ~8 MiB files gets a multiple of 8 files instead."""
    reader: str = "petastorm"
    """How ranks stream their shard: ``petastorm`` (the default) or ``arrow`` (pyarrow.dataset, no petastorm needed:
    for environments where petastorm cannot be installed). Both give a rank the same jets."""
    mass_bin_edges_max: float = 200.0
    mass_bins: int = 20
    """Auxiliary target: jet mass in ``mass_bins`` classes, edges ``linspace(0, max, mass_bins)`` + overflow."""
    aux_mass_columns: list[str] = field(default_factory=lambda: ["mass"])
    """Columns binned as auxiliary targets, each a focal-loss output of the head on z: ``[mass]`` is the original;
    ``sd_mass`` is the groomed mass (at particle level the plain mass also carries the underlying event). The aux
    loss is the mean over targets. Every listed column must be filled for every jet."""
    ntuple: dict[str, Any] = field(default_factory=dict)
    """For ``prepare --format ntuple``: which branches of your ROOT n-tuples hold the particles, the jet and the
    label (``tree``, ``particles``, ``momenta``, ``jet``, ``label``, ``label_values``, ``columns``; docs/data.md)."""

    @property
    def mass_range(self) -> tuple[float, float] | None:
        """``mass_window`` as the (LO, HI) the generator and the hls4ml reader cut on; None: no cut."""
        return (self.mass_window[0], self.mass_window[1]) if self.mass_window else None


@dataclass
class ModelConfig:
    """ABCnet sizes and structure (defaults: the original UCluster jet model as it ran)."""

    k_neighbours: int = 10
    gap1_features: int = 16
    mlp1: list[int] = field(default_factory=lambda: [64, 128])
    gap2_features: int = 128
    mlp2: list[int] = field(default_factory=lambda: [256, 256])
    n_clusters: int = 3
    mask_padding: bool = True
    """True: padded slots are masked out of every kNN search, attention, batch-norm statistic and pooling, and stay
    zero. False (as the original ran): only the first kNN search skips them; otherwise padded slots are processed
    like particles (their neighbours are the real particles nearest the jet axis) and count in the batch norms and
    in z's average over all slots."""
    particle_layout: str = "packed"
    """How particles are laid out inside the network when ``mask_padding`` is true; the numbers are the same.
    ``packed``: rows of the batch's real particles only (jets fill about half of their slots, so about half the
    work). ``padded``: every slot a row, padding masked (fixed shapes). With ``mask_padding: false`` every slot is
    a particle, so the layout is padded."""
    embedding_dim: int = 0
    """Dimension of the embedding z; 0: ``n_clusters`` (the original: one dimension per cluster). A wider z is an
    option for the clustering step, not the original recipe."""
    embedding_pooling: str = "mean_all_slots"
    """How the per-particle embedding becomes z: ``mean_all_slots`` (the original: the average over every slot,
    padding included, so z also carries the jet's multiplicity), ``mean_real`` (over real particles only),
    ``max_real``."""
    aux_hidden: list[int] = field(default_factory=lambda: [256, 128])
    aux_batch_norm: bool = True
    """Batch norm in the auxiliary head's hidden layers (as run): it makes the auxiliary loss blind to the scale
    and offset of z, so the clustering loss can tighten z without fighting it."""
    aux_dropout: float = 0.0
    """Dropout after each hidden layer of the auxiliary head (as run: none)."""

    @property
    def z_dim(self) -> int:
        """The embedding's dimension (``embedding_dim``, or one per cluster)."""
        return self.embedding_dim or self.n_clusters


@dataclass
class LossConfig:
    """L = focal_weight * focal(aux) + clustering_weight * L_clust, with the soft assignment hardened by alpha.

    Defaults: the loss as run behind the original 0.81 (batch means, beta = 10, focal gamma = 2, multiplier 1)."""

    focal_gamma: float = 2.0
    """Focal-loss exponent (as run: 2; the original source's default, not what ran: 4)."""
    focal_weight: float = 1.0
    """Multiplier of the focal loss (as run: 1; the source's default: 10)."""
    focal_epsilon: float = 1.0e-9
    """As run: the original adds this to the true class's softmax probability, inside the log and in (1 - p)^gamma,
    so a jet's focal loss is capped at -log(eps) ~ 20.7 and stops pulling once p << eps. 0: log-softmax, exact."""
    clustering_weight: float = 10.0
    clustering_reduction: str = "mean"
    """``mean`` (as run): the batch mean of the per-jet clustering loss; ``sum``: summed over the rank's batch
    (an earlier version of the original code), which makes the term batch-size times stronger."""
    alpha_start: float = 10.0
    """Softness of the assignment in the first clustering epoch (as run: 10)."""
    alpha_step: float = 5.0
    """Added to alpha every further clustering epoch (as run: 5)."""
    balance_weight: float = 0.0
    """Option, not the original: weight of a prior that keeps every cluster populated, log K minus the entropy of
    the batch's mean soft assignment (0 when the batch spreads evenly over the K clusters)."""
    assignment: str = "softmax"
    """How a jet's distances weigh in the clustering loss: ``softmax`` (as run: softmax_k(-alpha d_k), differentiated
    through) or ``sinkhorn`` (option: that softmax rescaled by Sinkhorn-Knopp so the rank's batch splits into equal
    shares, held fixed as the target: an equal-size prior for clusters that share one mode of z)."""
    sinkhorn_iterations: int = 3
    alpha_every_jets: int = 0
    """0 (as run): ``alpha_step`` is added once per clustering epoch. N: it is added every N training jets of the
    clustering phase, so alpha's growth per jet seen is the same on any dataset size and epoch length (the
    original: +5 per epoch of ~306k jets, i.e. N = 306000)."""


@dataclass
class TrainConfig:
    """Schedule and optimisation."""

    epochs: int = 200
    pretrain_epochs: int = 20
    batch_size: int = 512
    """Per rank; the global batch is batch_size x num_proc (logged)."""
    learning_rate: float = 1e-3
    scale_lr_by_workers: bool = False
    """Multiply the learning rate by num_proc (the usual rule when the global batch grows)."""
    lr_halve_every: float = 0.08
    """The learning rate halves every this fraction of pre-training (staircase), so it reaches its floor at the
    same point of pre-training on any dataset size: the original halved every 500k samples of a pre-training of
    21 epochs x ~300k jets (0.08), reaching 1e-5 in epoch 11 and running the whole clustering phase at the floor."""
    lr_floor: float = 1e-5
    """The learning rate never goes below this; the clustering phase runs at it."""
    bn_momentum_start: float = 0.5
    bn_momentum_max: float = 0.99
    bn_momentum_halve_every: float = 0.08
    """Batch-norm momentum (of the moving statistics used for inference) 1 - (1 - start) / 2^n after n periods of
    this fraction of pre-training, at most ``bn_momentum_max``: the original's 0.5 rising to 0.99 on the same
    period as the learning rate. start = max gives a fixed momentum."""
    steps_per_epoch: int = 0
    """0: an epoch is one pass over the training split, every jet once. N: an epoch ends after at most N steps,
    taken from the start of a fresh seeded shuffle of each shard (for datasets far larger than an epoch should
    be: the learning-rate and momentum schedules, checkpoints and validation then follow steps, not the dataset's
    size). Over epochs every row group is drawn at random; a resumed run still sees the order it would have."""
    epoch_eval_max_jets: int = 0
    """Per-epoch measurements (validation metrics, the k-means start's test accuracy) on about this many jets of
    the split: a fixed subset chosen by a hash of jet_id, the same every epoch (0: every jet). The final test
    metrics always use every test jet."""
    shuffle_buffer: int = 2048
    seed: int = 7
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    min_cluster_fraction: float = 0.0
    """Option, not the original: after each clustering epoch, a centroid whose cluster held less than this fraction
    of the epoch's training jets is re-seeded by splitting the largest cluster along its principal axis (0: never)."""
    centroid_update: str = "adam"
    """How the centroids follow the embedding in the clustering phase. ``adam`` (as run): trainable variables of
    the network's optimizer, so at the 1e-5 floor they move at most ~1e-5 per step while the network moves z.
    ``sgd``: plain gradient steps of their own rate (``centroid_learning_rate``) on the rank-averaged gradient.
    ``kmeans``: after every step each centroid moves toward the mean of the jets nearest to it in the global
    batch (mini-batch k-means, Sculley 2010), with counts forgotten at ``centroid_decay`` per step; the clustering
    loss then trains the network only."""
    centroid_learning_rate: float = 0.003
    """Step size of ``centroid_update: sgd`` (unused otherwise)."""
    centroid_decay: float = 0.99
    """``centroid_update: kmeans``: the weight kept per step by the jets counted so far, so a centroid is an
    average over roughly the last 1 / (1 - decay) steps' jets and keeps up with an embedding that moves."""
    validate_every_steps: int = 0
    """In the clustering phase, also measure the validation subset (``epoch_eval_max_jets``) every this many
    optimizer steps, not only at the end of each epoch (0: at epoch ends only). Each measurement is a point of
    ``history[*].validations``: accuracy, NMI, cluster sizes, the distance of each centroid to its jets' mean, the
    share of jets that changed cluster since the previous point, and the clustering loss since then."""
    validate_test: bool = False
    """Also score the test split's fixed subset at every validation point: a diagnostic that uses labels, for
    comparing the model chosen without labels with the best one (the accuracy benchmark); never read by training."""
    stop_rule: str = "never"
    """How training chooses its final model without labels: ``never`` (run every epoch), ``assignments`` (stop once
    fewer than ``stop_tolerance`` of the validation jets changed cluster between consecutive validation points,
    ``stop_patience`` times in a row), ``loss`` (stop once the clustering loss per jet fell by less than
    ``stop_tolerance`` relative between consecutive points, ``stop_patience`` times in a row)."""
    stop_tolerance: float = 0.01
    stop_patience: int = 3
    stop_min_clustering_steps: int = 0
    """The stop rule is not applied before this many clustering steps (the original's climb started after ~2k)."""
    init_from: str = ""
    """A finished run directory (one ``ucluster-import`` wrote from an original UCluster checkpoint, say) whose
    weights, batch-norm statistics and centroids the model starts from instead of random ones; its model settings
    must be these. The k-means at the end of pre-training still places the centroids (``pretrain_epochs: 0``: the
    clustering phase starts from the run's own). Read by rank 0: on a cluster, a path every executor sees."""
    kmeans_max_jets: int = 200_000
    """Centroid initialisation: k-means on at most this many training embeddings, a seeded sample taken on every
    rank before anything is gathered (only the sample moves; memory does not grow with the dataset)."""


@dataclass
class RunConfig:
    """How the job is launched and where it writes."""

    num_proc: int = 2
    launcher: str = "horovod"
    """How the ranks start and talk: ``horovod`` (``horovod.spark.run``, Gloo or NCCL collectives) or ``barrier``
    (one Spark barrier stage, ``tf.distribute.MultiWorkerMirroredStrategy`` collectives: no Horovod needed)."""
    collective_timeout_seconds: float = 300.0
    """Barrier launcher: a collective that waits longer than this for a peer fails its rank (a peer frozen or
    lost), so the job ends instead of hanging. Horovod's own is HOROVOD_GLOO_TIMEOUT_SECONDS."""
    output: str = ""
    """Run directory. Empty: ``runs/<UTC timestamp>``."""
    start_timeout: int = 600
    failure_grace_seconds: float = 60.0
    """After the first rank fails, how long the others get to exit by themselves (their collectives fail at once if
    the peer died, after HOROVOD_GLOO_TIMEOUT_SECONDS, default 30, if it froze) before the driver stops them all."""
    horovod_cycle_time_ms: float = 5.0
    """Horovod's background loop wakes up this often to negotiate collectives (its own default is 1 ms). Each
    wake-up costs CPU; with steps of ~1 s, 5 ms adds < 1 % latency and leaves the cores to TensorFlow. GPU steps
    take milliseconds: use 1 there."""
    bind_ranks_to_cores: bool = False
    """Bind each rank's threads to its own share of the cores it may use (as ``mpirun --bind-to core``): for
    executors running several ranks with no core to spare. Off on clusters whose executors share cores."""
    malloc_thresholds: bool = True
    """Start the ranks with glibc's mmap and trim thresholds raised (``ucluster_spark/_env.py``): the step's large
    tensors are then reused from the heap instead of mapped and unmapped every step. Off: glibc's defaults (or
    your own allocator settings, e.g. an ``LD_PRELOAD``-ed jemalloc)."""
    rank_memory_limit_mb: float = 0.0
    """A rank whose resident memory passes this many MB fails at once with a message naming it (0: no limit). Set
    it below what the cluster manager allows the executor's Python processes (YARN/Kubernetes memory overhead), so
    the job ends with the cause named instead of an executor lost without a word; ``--resume`` continues."""
    verbose: int = 1
    spark_conf: dict[str, str] = field(default_factory=dict)


@dataclass
class EvaluateConfig:
    """Cluster assignment of a dataset with a trained model (``jobs/evaluate.py``) and the plots."""

    splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])
    """Splits of the dataset to assign (those with jets); metrics are given for all of them together and each."""
    batch_size: int = 1024
    """Jets per forward pass inside an executor (inference only: larger than training batches)."""
    plot_jets: int = 5000
    """Jets in the embedding scatter plot (a sample; every other plot and metric uses every jet)."""
    table: str = ""
    """Also write the assignments to this table of the Spark catalog (``[catalog.][schema.]table``; on Databricks a
    Unity Catalog table), partitioned by ``run_id``, with columns ``run_id`` and ``model_version``, after the output
    directory is complete. Empty: the output directory only."""
    table_mode: str = "append"
    """``append``: add this run ID's rows (a run ID the table already holds is refused: a rerun would count its jets
    twice); ``overwrite``: replace this run ID's rows only."""
    table_format: str = ""
    """Format of a table made on first use: empty for the session's default (Delta on Databricks, parquet in plain
    Spark), or e.g. ``delta`` with Delta Lake configured."""
    run_id: str = ""
    """The run ID written with every row; empty: the output directory's name (in the pipeline: its run ID)."""


@dataclass
class PipelineConfig:
    """The scheduled step ``jobs/pipeline.py``: data -> train -> evaluate under ``root/<run id>/``."""

    root: str = "pipelines"
    input: str = ""
    """Glob(s) of jet files to prepare (with ``data.mass_window``). Empty: use ``data.path`` if set, else generate
    with Pythia."""
    input_format: str = "hls4ml"
    """The layout of the ``input`` files: a name in ``registry.SOURCES`` (docs/data.md)."""
    input_table: str = ""
    """A table of the Spark catalog to prepare instead of files (the column contract: docs/data.md)."""
    drop_bad_jets: bool = False


@dataclass
class TrackingConfig:
    """MLflow, when ``mlflow`` is installed and a tracking server is configured (``MLFLOW_TRACKING_URI``, or the
    Databricks runtime's own): what the train job and the pipeline log besides parameters, metrics and plots."""

    log_model: bool = True
    """Log the trained model as an MLflow model: a pyfunc around its SavedModel, with a signature and an input example
    from the dataset, the run's config and centroids inside (docs/jobs.md, "MLflow")."""
    register_as: str = ""
    """Also register that model under this name in the model registry (Unity Catalog: ``catalog.schema.model``).
    Empty: logged, not registered."""


SECTION_CLASSES: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "train": TrainConfig,
    "run": RunConfig,
    "evaluate": EvaluateConfig,
    "pipeline": PipelineConfig,
    "tracking": TrackingConfig,
}
SECTION_NAMES = tuple(SECTION_CLASSES)
