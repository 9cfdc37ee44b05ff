"""A rank out of memory or out of disk: the job fails with a message naming the resource, and the run resumes from
its last checkpoint once the resource is back. Real exhaustion: a rank holding 4 GiB against
``run.rank_memory_limit_mb``, a run directory on a small tmpfs filled to the last byte."""

import errno
import json
import subprocess

import pytest

from tests.conftest import ROOT, STACK, TINY, submit
from ucluster_spark import errors
from ucluster_spark.executor.rank import exhaustion
from ucluster_spark.executor.rank.environment import FAULT_ENV

pytestmark = [pytest.mark.slow, pytest.mark.portable]


def _mount_small_disk(mount):
    """A 64 MB tmpfs at ``mount``, or the reason it cannot be made (needs root: CI and this project's machines run
    as root)."""
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True)
    return "" if made.returncode == 0 else f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}"


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    if why := _mount_small_disk(mount):
        pytest.skip(why)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_and_memory_errors_are_named_by_resource(small_disk):
    filler = small_disk / "filler"
    with pytest.raises(OSError) as caught, open(filler, "wb") as handle:
        while True:
            handle.write(bytes(2**20))
            handle.flush()
    assert caught.value.errno == errno.ENOSPC
    found = exhaustion.exhausted_resource(caught.value, near=str(filler))  # a write error names no file: the run dir
    assert found.startswith(f"out of disk space on {small_disk} (0 MB free of 64 MB)"), found
    try:
        raise RuntimeError("checkpoint failed") from caught.value
    except RuntimeError as wrapped:
        assert exhaustion.exhausted_resource(wrapped, near=str(filler)) == found  # found through the cause
        assert exhaustion.rank_exit_code_for(wrapped) == errors.RANK_OUT_OF_DISK
    assert exhaustion.exhausted_resource(MemoryError()).startswith("out of memory")
    assert exhaustion.rank_exit_code_for(exhaustion.MemoryLimitExceeded("x")) == errors.RANK_OUT_OF_MEMORY
    assert (
        exhaustion.exhausted_resource(ValueError("bad")) is None and exhaustion.rank_exit_code_for(ValueError()) is None
    )


def _train(run_dir, work, synthetic_root, *extra, fault=None):
    return submit(
        "--config", str(ROOT / "conf/local.yaml"), "--data", str(synthetic_root), "--output", str(run_dir), *TINY,
        *STACK, *extra, cwd=work, extra_env={FAULT_ENV: fault} if fault else None, timeout=600,
    )  # fmt: skip


def _resume(run_dir, work, fault=None):
    return submit("--resume", str(run_dir), cwd=work, extra_env={FAULT_ENV: fault} if fault else None, timeout=600)


@pytest.fixture(scope="module")
def memory_then_disk(synthetic_dataset, tmp_path_factory):
    """One run through both exhaustions, each its own job, at the first step of epoch 2 (after the epoch-1
    checkpoint): rank 1 takes 4 GiB more against ``run.rank_memory_limit_mb=3500`` (ranks use ~1-1.5 GB); resumed,
    rank 0 fills the run directory's filesystem (a 64 MB tmpfs), so its next write (progress line or checkpoint)
    fails with ENOSPC and its failure report cannot be written either: the exit code carries the cause; resumed
    once there is room, it finishes. Without root (no tmpfs) the memory half runs alone."""
    work = tmp_path_factory.mktemp("exhaustion")
    no_disk = _mount_small_disk(work / "disk")
    run_dir = (work if no_disk else work / "disk") / "run"
    runs = {"run_dir": run_dir, "no_disk": no_disk}
    try:
        runs["memory"] = _train(run_dir, work, synthetic_dataset[0], "run.rank_memory_limit_mb=3500",
                                fault="allocate:1:1:1")  # fmt: skip
        if not no_disk:
            runs["disk"] = _resume(run_dir, work, fault="fill_disk:0:1:0")
            runs["latest_after_disk"] = (run_dir / "checkpoints" / "LATEST").read_text().strip()
            (run_dir / "fill-disk").unlink(missing_ok=True)  # room again
        runs["resumed"] = _resume(run_dir, work)
        yield runs
    finally:
        if not no_disk:
            subprocess.run(["umount", "-l", str(work / "disk")], check=False)


def _resumed_to_the_end(runs):
    resumed, run_dir = runs["resumed"], runs["run_dir"]
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-6000:]
    assert "resumed from" in (run_dir / "train.log").read_text()
    assert [h["epoch"] for h in json.loads((run_dir / "history.json").read_text())] == [0, 1]


def test_a_rank_over_its_memory_limit_fails_naming_it_and_the_run_resumes(memory_then_disk):
    failed, run_dir = memory_then_disk["memory"], memory_then_disk["run_dir"]
    assert failed.returncode == errors.EXIT_TRAINING_FAILED, failed.stderr[-4000:]
    assert "passed run.rank_memory_limit_mb=3500" in failed.stderr
    assert "the rank ran out of memory" in failed.stderr  # from its exit code (12), whichever launcher
    assert f"continue from checkpoint epoch-0001 with --resume {run_dir}" in failed.stderr
    _resumed_to_the_end(memory_then_disk)


def test_a_rank_out_of_disk_fails_naming_it_and_the_run_resumes_once_there_is_room(memory_then_disk):
    if memory_then_disk["no_disk"]:
        pytest.skip(memory_then_disk["no_disk"])
    failed = memory_then_disk["disk"]
    assert failed.returncode == errors.EXIT_TRAINING_FAILED, failed.stderr[-4000:]
    assert "out of disk space" in failed.stderr
    assert "the rank ran out of disk space" in failed.stderr  # from its exit code (28), whichever launcher
    assert memory_then_disk["latest_after_disk"] == "epoch-0001"
    _resumed_to_the_end(memory_then_disk)
