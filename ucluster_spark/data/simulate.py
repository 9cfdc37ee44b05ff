"""Executor side: Pythia 8 + FastJet jets of one class, generated inside a Spark task.

Particle-level jets with the hls4ml LHC-jet dataset's selection: 13 TeV pp, anti-kT R = 0.8 on all
visible final-state particles, the two leading jets kept when 800 < pT < 1200 GeV and |eta| < 2. W, Z and top
jets must lie within dR < 0.8 of the decaying particle with all its decay quarks inside; q/g jets are labelled
by the hard outgoing parton within dR < 0.8 (c/b jets dropped). Optionally only jets with LO < mass < HI are kept
(the original UCluster selection: 10 < m_jet < 200 GeV), and the underlying event (multi-parton interactions) can be
switched off.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ucluster_spark import schema
from ucluster_spark.data.features import constituent_features
from ucluster_spark.errors import ConfigError

log = logging.getLogger(__name__)

COMMON_SETTINGS = (
    "Beams:eCM = 13000.",
    "PhaseSpace:pTHatMin = 900.",
    "Print:quiet = on",
    "Next:numberCount = 0",
    "Next:numberShowEvent = 0",
    "Next:numberShowInfo = 0",
    "Next:numberShowProcess = 0",
    "Random:setSeed = on",
)
PROCESS_SETTINGS: dict[str, tuple[str, ...]] = {
    "g": ("HardQCD:gg2gg = on", "HardQCD:qqbar2gg = on", "HardQCD:qg2qg = on"),
    "q": ("HardQCD:all = on",),
    "w": (
        "WeakBosonAndParton:qqbar2Wg = on",
        "WeakBosonAndParton:qg2Wq = on",
        "24:onMode = off",
        "24:onIfAny = 1 2 3 4 5",
    ),
    "z": (
        "WeakBosonAndParton:qqbar2gmZg = on",
        "WeakBosonAndParton:qg2gmZq = on",
        "WeakZ0:gmZmode = 2",
        "23:onMode = off",
        "23:onIfAny = 1 2 3 4 5",
    ),
    "t": ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on", "24:onMode = off", "24:onIfAny = 1 2 3 4 5"),
}
NO_UNDERLYING_EVENT = ("PartonLevel:MPI = off",)
DECAYING_ID = {"w": 24, "z": 23, "t": 6}
JET_R = 0.8
JET_PT_RANGE = (800.0, 1200.0)
JET_ABS_ETA_MAX = 2.0
EVENTS_PER_BATCH = 50
MAX_REJECTED_BEFORE_FIRST = 1000
"""A task whose first this-many jets all fall outside the mass window stops (the window keeps nothing)."""
MAX_SEED = 900_000_000


@dataclass(frozen=True)
class GenerationTask:
    """One Spark task: ``n_jets`` jets of ``class_name`` from a Pythia stream seeded with ``seed``."""

    class_name: str
    label: int
    seed: int
    n_jets: int
    task_index: int


def plan_tasks(classes: list[str], jets_per_class: int, tasks_per_class: int, base_seed: int) -> list[GenerationTask]:
    """Split each class over tasks; every task gets its own seed, so the streams are disjoint and reproducible."""
    tasks = []
    for label, name in enumerate(classes):
        if name not in PROCESS_SETTINGS:
            raise ConfigError(
                f"data.classes: cannot generate class {name!r} with Pythia (it makes {list(PROCESS_SETTINGS)}); "
                "the other classes come from prepared files (docs/data.md)"
            )
        sizes = np.full(tasks_per_class, jets_per_class // tasks_per_class)
        sizes[: jets_per_class % tasks_per_class] += 1
        for n in sizes:
            index = len(tasks)
            seed = base_seed * 100_000 + index + 1
            if not 0 < seed < MAX_SEED:
                raise ValueError(f"Pythia seed {seed} from generation_seed={base_seed} is outside (0, {MAX_SEED})")
            if n > 0:
                tasks.append(GenerationTask(name, label, int(seed), int(n), index))
    return tasks


def settings(class_name: str, seed: int, underlying_event: bool = True) -> tuple[str, ...]:
    """Every Pythia setting of one task."""
    extra = () if underlying_event else NO_UNDERLYING_EVENT
    return (*COMMON_SETTINGS, f"Random:seed = {seed}", *PROCESS_SETTINGS[class_name], *extra)


def _pythia(class_name: str, seed: int, underlying_event: bool = True):
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)
    for line in settings(class_name, seed, underlying_event):
        if not pythia.readString(line):
            raise RuntimeError(f"Pythia rejected the setting {line!r}")
    if not pythia.init():
        raise RuntimeError(f"Pythia failed to initialise for class {class_name!r}, seed {seed}")
    return pythia


def _delta_r(eta1, phi1, eta2, phi2):
    dphi = np.mod(np.asarray(phi1) - np.asarray(phi2) + np.pi, 2 * np.pi) - np.pi
    return np.hypot(np.asarray(eta1) - np.asarray(eta2), dphi)


def _eta_phi(px, py, pz):
    pt = np.hypot(px, py)
    return np.arcsinh(pz / np.maximum(pt, 1e-12)), np.arctan2(py, px)


def _last_copy(ids: np.ndarray, d1: np.ndarray, d2: np.ndarray, i: int) -> int:
    """Follow a particle through its recoil copies (single daughter with the same id) to the one that decays."""
    while d1[i] > 0 and (d2[i] == d1[i] or d2[i] == 0) and ids[d1[i]] == ids[i]:
        i = d1[i]
    return i


def _decay_quarks(ids, d1, d2, i: int) -> list[int]:
    """Indices of the quarks a W/Z/top decays to (through the top's W)."""
    i = _last_copy(ids, d1, d2, i)
    first, last = d1[i], max(d1[i], d2[i])
    quarks: list[int] = []
    if first <= 0:
        return quarks
    for j in range(first, last + 1):
        if 1 <= abs(ids[j]) <= 5:
            quarks.append(j)
        elif abs(ids[j]) == 24:
            quarks.extend(_decay_quarks(ids, d1, d2, j))
    return quarks


def truth_directions(record: dict[str, np.ndarray], class_name: str) -> list[tuple[float, float, list]]:
    """(eta, phi, decay-quark (eta, phi) list) of every object a jet of this class must match.

    ``record`` holds one event's record as numpy arrays (id, daughter1, daughter2, px, py, pz), indexed like
    Pythia's event record (entry 0 is the system).
    """
    ids, d1, d2 = record["id"], record["daughter1"], record["daughter2"]
    eta, phi = _eta_phi(record["px"], record["py"], record["pz"])
    found = []
    if class_name in DECAYING_ID:
        candidates = np.flatnonzero(np.abs(ids) == DECAYING_ID[class_name])
        for i in {_last_copy(ids, d1, d2, int(c)) for c in candidates}:
            quarks = _decay_quarks(ids, d1, d2, i)
            if quarks:
                found.append((eta[i], phi[i], [(eta[q], phi[q]) for q in quarks]))
    else:  # g or q: the two outgoing partons of the hard process (event record entries 5 and 6)
        for i in (5, 6):
            a = abs(ids[i])
            if (class_name == "g" and a == 21) or (class_name == "q" and 1 <= a <= 3):
                found.append((eta[i], phi[i], []))
    return found


def _matches(jet_eta, jet_phi, truth) -> bool:
    for eta, phi, quarks in truth:
        if _delta_r(jet_eta, jet_phi, eta, phi) < JET_R and all(
            _delta_r(jet_eta, jet_phi, qe, qp) < JET_R for qe, qp in quarks
        ):
            return True
    return False


def substructure(constituents) -> dict[str, np.ndarray]:
    """Soft-drop mass (beta = 0, z_cut = 0.1) and N-subjettiness ratios of each jet (jets as awkward lists)."""
    import fastjet

    if len(constituents) == 0:
        return {schema.SD_MASS: np.zeros(0), schema.TAU21: np.zeros(0), schema.TAU32: np.zeros(0)}
    # Each jet is its own "event", reclustered with C/A (the soft-drop convention).
    sequence = fastjet.ClusterSequence(constituents, fastjet.JetDefinition(fastjet.cambridge_algorithm, 1.0))
    groomed = sequence.exclusive_jets_softdrop_grooming(njets=1, beta=0.0, symmetry_cut=0.1, R0=JET_R)
    tau = np.asarray(sequence.njettiness(njets=[1, 2, 3], beta=1.0, R0=JET_R), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau21 = np.where(tau[:, 0] > 0, tau[:, 1] / tau[:, 0], 0.0)
        tau32 = np.where(tau[:, 1] > 0, tau[:, 2] / tau[:, 1], 0.0)
    return {schema.SD_MASS: np.asarray(groomed.msoftdrop, dtype=np.float64), schema.TAU21: tau21, schema.TAU32: tau32}


def _flat(array, dtype=np.float64) -> np.ndarray:
    import awkward as ak

    return ak.to_numpy(ak.flatten(array, axis=None)).astype(dtype)


def _offsets(array) -> np.ndarray:
    import awkward as ak

    return np.concatenate([[0], np.cumsum(ak.to_numpy(ak.num(array, axis=1)))])


def _select_jets(events, class_name: str, jet_p4: np.ndarray, jet_offsets: np.ndarray) -> list[int]:
    """Flat indices of the jets kept: each event's two leading jets, in the pT/eta window and truth-matched."""
    prt = events.prt
    record = {name: _flat(prt[name], np.int64) for name in ("id", "daughter1", "daughter2")}
    record.update({c: _flat(prt.p[c]) for c in ("px", "py", "pz")})
    record_offsets = _offsets(prt.id)
    pt = np.hypot(jet_p4[:, 0], jet_p4[:, 1])
    eta, phi = _eta_phi(jet_p4[:, 0], jet_p4[:, 1], jet_p4[:, 2])
    chosen = []
    for e in range(len(jet_offsets) - 1):
        first, last = jet_offsets[e], jet_offsets[e + 1]
        leading = first + np.argsort(-pt[first:last])[:2]
        leading = [j for j in leading if JET_PT_RANGE[0] < pt[j] < JET_PT_RANGE[1] and abs(eta[j]) < JET_ABS_ETA_MAX]
        if not leading:
            continue
        lo, hi = record_offsets[e], record_offsets[e + 1]
        truth = truth_directions({k: v[lo:hi] for k, v in record.items()}, class_name)
        chosen.extend(int(j) for j in leading if _matches(eta[j], phi[j], truth))
    return chosen


def _mass(jet_p4: np.ndarray) -> np.ndarray:
    """Jet mass as stored (float32), so a window applied to it holds for the written column exactly."""
    px, py, pz, energy = jet_p4.T
    return np.sqrt(np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0)).astype(np.float32)


def _in_window(chosen: list[int], jet_p4: np.ndarray, need: int, mass_window) -> tuple[list[int], int]:
    """The first ``need`` chosen jets with LO < mass < HI, and how many of the jets up to the last one kept fell
    outside the window (the jets after it are not needed, so they are not counted)."""
    if mass_window is None:
        return chosen[:need], 0
    mass = _mass(jet_p4[chosen]) if chosen else np.zeros(0, np.float32)
    inside = (mass > mass_window[0]) & (mass < mass_window[1])
    kept = np.flatnonzero(inside)[:need]
    examined = kept[-1] + 1 if len(kept) == need else len(chosen)
    return [chosen[i] for i in kept], int((~inside[:examined]).sum())


def generate_jets(
    task: GenerationTask,
    max_constituents: int,
    feature_set: str,
    progress_every: float = 15.0,
    mass_window: tuple[float, float] | None = None,
    underlying_event: bool = True,
    rejected: Counter | None = None,
):
    """Yield pandas frames of jets in the dataset schema until ``task.n_jets`` jets are made.

    With ``mass_window`` (LO, HI) only jets with LO < mass < HI GeV count, and generation goes on until
    ``task.n_jets`` of them are made; the jets outside it are counted in ``rejected["outside_mass_window"]``.
    Work is done per batch of events on flat numpy arrays; Python loops run over events, never over particles.
    """
    import awkward as ak
    import fastjet
    import vector

    vector.register_awkward()
    rejected = Counter() if rejected is None else rejected
    outside = 0
    pythia = _pythia(task.class_name, task.seed, underlying_event)
    definition = fastjet.JetDefinition(fastjet.antikt_algorithm, JET_R)
    made, start, last_report = 0, time.time(), time.time()
    prefix = f"{task.class_name} seed={task.seed}:"
    log.info("%s starting, %d jets", prefix, task.n_jets)
    while made < task.n_jets:
        events = pythia.nextBatch(EVENTS_PER_BATCH)
        prt = events.prt
        absid = abs(prt.id)
        visible = prt[(prt.status > 0) & (absid != 12) & (absid != 14) & (absid != 16)]
        particles = ak.zip(
            {"px": visible.p.px, "py": visible.p.py, "pz": visible.p.pz, "E": visible.p.e},
            with_name="Momentum4D",
        )
        sequence = fastjet.ClusterSequence(particles, definition)
        jets = sequence.inclusive_jets(min_pt=JET_PT_RANGE[0] * 0.9)
        jet_p4 = np.stack([_flat(jets[c]) for c in ("px", "py", "pz", "E")], axis=1)
        chosen = _select_jets(events, task.class_name, jet_p4, _offsets(jets.px))
        chosen, n_outside = _in_window(chosen, jet_p4, task.n_jets - made, mass_window)
        rejected["outside_mass_window"] += n_outside
        outside += n_outside
        if not made and not chosen and outside >= MAX_REJECTED_BEFORE_FIRST:
            from ucluster_spark.errors import InputFileError

            raise InputFileError(
                f"data.mass_window {list(mass_window)}: none of the first {outside} {task.class_name} jets has "
                f"{mass_window[0]:g} < mass < {mass_window[1]:g} GeV; widen the window"
            )
        if not chosen:
            continue
        chosen = np.array(chosen)
        # Constituents come in the same jet order as inclusive_jets (same sequence, same pT cut).
        kept = ak.flatten(sequence.constituents(min_pt=JET_PT_RANGE[0] * 0.9), axis=1)[chosen]
        frame = _jets_frame(task, made, jet_p4[chosen], kept, max_constituents, feature_set)
        made += len(frame)
        yield frame
        if time.time() - last_report > progress_every or made >= task.n_jets:
            rate = made / max(time.time() - start, 1e-9)
            log.info("%s %d/%d jets (%.1f jets/s)", prefix, made, task.n_jets, rate)
            last_report = time.time()


def _jets_frame(task, first_index, jet_p4, constituents, max_constituents, feature_set) -> pd.DataFrame:
    px, py, pz, energy = jet_p4.T
    pt = np.hypot(px, py)
    eta, phi = _eta_phi(px, py, pz)
    mass = _mass(jet_p4)
    particle_p4 = np.stack([_flat(constituents[c]) for c in ("px", "py", "pz", "E")], axis=1)
    offsets = _offsets(constituents.px)
    counts = np.diff(offsets)
    arrays = [
        constituent_features(
            particle_p4[offsets[i] : offsets[i + 1]],
            (pt[i], eta[i], phi[i], energy[i]),
            max_constituents,
            feature_set,
        ).ravel()
        for i in range(len(pt))
    ]
    shapes = substructure(constituents)
    n = len(pt)
    frame = pd.DataFrame(
        {
            schema.JET_ID: [f"{task.class_name}-s{task.seed}-{first_index + i}" for i in range(n)],
            schema.LABEL: np.full(n, task.label, dtype=np.int32),
            schema.LABEL_NAME: task.class_name,
            schema.PT: pt.astype(np.float32),
            schema.ETA: eta.astype(np.float32),
            schema.PHI: phi.astype(np.float32),
            schema.MASS: mass.astype(np.float32),
            schema.SD_MASS: shapes[schema.SD_MASS].astype(np.float32),
            schema.TAU21: shapes[schema.TAU21].astype(np.float32),
            schema.TAU32: shapes[schema.TAU32].astype(np.float32),
            schema.N_CONSTITUENTS: counts.astype(np.int32),
            schema.CONSTITUENTS: arrays,
        }
    )
    return frame[list(schema.COLUMNS)]
