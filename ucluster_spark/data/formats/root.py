"""What every ROOT layout needs of a file (read with uproot, lazily; never a whole file on the driver): open one
TTree, name a damaged file as such, pad jagged particle branches, and check that a jet's particle branches agree
on its particle count."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ucluster_spark.errors import InputFileError


def unreadable(path: str, err: Exception, where: str = "") -> InputFileError:
    return InputFileError(f"{path}: not a readable ROOT file{where} ({type(err).__name__}: {str(err).strip()[:300]})")


def open_tree(path: str, tree: str):
    """(file, tree): a damaged file fails here or at its first read, as ``unreadable``; the file must be closed."""
    import uproot

    if not Path(path).is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        handle = uproot.open(path)
        if tree not in handle:
            found = sorted(handle.keys(cycle=False))
            handle.close()
            raise InputFileError(f"{path}: no TTree '{tree}' (has: {found})")
        return handle, handle[tree]
    except InputFileError:
        raise
    except Exception as err:  # uproot raises ValueError, OSError or its own deserialization errors
        raise unreadable(path, err) from None


def branch_names(path: str, tree: str) -> tuple[set[str], int]:
    """Driver side: the tree's branch names and entries, from its metadata only."""
    handle, opened = open_tree(path, tree)
    with handle:
        try:
            return set(opened.keys()), int(opened.num_entries)
        except Exception as err:
            raise unreadable(path, err) from None


def read_branches(path: str, tree: str, branches: list[str], start: int, stop: int):
    """Entries [start, stop) of ``branches`` as awkward arrays."""
    handle, opened = open_tree(path, tree)
    with handle:
        try:
            return opened.arrays(branches, entry_start=start, entry_stop=stop, library="ak")
        except Exception as err:
            raise unreadable(path, err, f" in entries {start}-{stop - 1}") from None


def particle_counts(arrays, branches: list[str] | tuple[str, ...], path: str, start: int) -> np.ndarray:
    """Particles per jet, refusing a jet whose particle branches disagree on it (naming file, branch and entry)."""
    import awkward as ak

    counts = ak.to_numpy(ak.num(arrays[branches[0]], axis=1))
    for branch in branches[1:]:
        other = ak.to_numpy(ak.num(arrays[branch], axis=1))
        if (bad := np.flatnonzero(other != counts)).size:
            raise InputFileError(
                f"{path}: branch '{branch}' entry {start + bad[0]} has {other[bad[0]]} particles but "
                f"'{branches[0]}' has {counts[bad[0]]}"
            )
    return counts


def padded(jagged, width: int) -> np.ndarray:
    """(N, width) float64 of a jagged branch, zero beyond each jet's particles."""
    import awkward as ak

    return ak.to_numpy(ak.fill_none(ak.pad_none(jagged, width, axis=1), 0.0)).astype(np.float64)


def scalar(arrays, branch: str) -> np.ndarray:
    import awkward as ak

    return ak.to_numpy(arrays[branch]).astype(np.float64)
