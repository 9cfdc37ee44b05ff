"""One writer per output, divergence stopped, damaged content and impossible outputs refused, the staging of a killed
writer removed, interrupts told in one line: each done for real (two processes, a real signal, a real damaged file,
a real diverging run)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, SPARK_SUBMIT, STACK, needs_horovod, submit
from tests.sample_files.hls4ml import jet_values, write_file
from ucluster_spark import checkpoint, config, errors, schema, store
from ucluster_spark.data.dataset import DatasetError, check_files, load_info, verify_checksums
from ucluster_spark.data.sources import prepare
from ucluster_spark.jobs import evaluate as evaluate_job
from ucluster_spark.jobs import generate as generate_job
from ucluster_spark.jobs import pipeline as pipeline_job
from ucluster_spark.jobs import prepare as prepare_job
from ucluster_spark.jobs import train as train_job

SMALL_MODEL = ["train.batch_size=16", "model.mlp1=[16,32]", "model.gap2_features=32", "model.mlp2=[32,32]"]

WRITER = textwrap.dedent(
    """
    import sys, time
    from ucluster_spark import store
    final = store.local_path(sys.argv[1])
    with store.exclusive_output(final, "test output"):
        staging = store.temporary_sibling(final)  # a write in progress, as atomic_directory makes it
        staging.mkdir()
        (staging / "part-00000.parquet").write_bytes(bytes(2**20))
        print("writing", flush=True)
        time.sleep(600)
    """
)


@contextmanager
def another_writer(output: Path):
    """A second process that holds ``output``'s lock, mid-write, until the block ends (or the test kills it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(output)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout.readline().strip() == "writing"
        yield process
    finally:
        process.kill()
        process.wait()


# ---- 1. one writer per output; 7. the staging of a killed writer is removed by the next one ------------------------


@pytest.mark.portable
def test_a_second_writer_is_refused_naming_the_first_and_a_killed_ones_staging_is_removed(tmp_path, package_log):
    output = tmp_path / "out"
    with another_writer(output) as first:
        with (
            pytest.raises(store.OutputBusy, match=rf"out: another job is writing this test output \(pid {first.pid} "
                                                  rf"on {socket.gethostname()}, started .*: -c {output}\)"),
            store.exclusive_output(output, "test output"),
        ):  # fmt: skip
            pass
        assert errors.exit_code_for(store.OutputBusy("x")) == errors.EXIT_BUSY == 75
        first.send_signal(signal.SIGKILL)  # killed mid-write: its lock dies with it, its staging stays
        first.wait()
    left = list(tmp_path.glob(".out.tmp-*"))
    assert len(left) == 1 and (left[0] / "part-00000.parquet").is_file()
    with store.exclusive_output(output, "test output"):
        assert not left[0].exists()  # removed before the new writer writes anything
    assert f"removed {left[0]} (1.0 MB), left by a writer of out that was stopped mid-write" in package_log.text
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # and the lock file goes with its holder


def test_a_killed_prepare_leaves_staging_that_the_next_prepare_removes(spark, tmp_path, package_log):
    write_file(tmp_path / "a.h5", jet_values(20, seed=1))
    data = config.load(None, ["data.classes=[w,z,t]", "data.files_per_split=2"]).data
    with another_writer(tmp_path / "ds") as first:
        with pytest.raises(store.OutputBusy, match=rf"pid {first.pid}"):
            prepare(spark, "hls4ml", str(tmp_path / "a.h5"), tmp_path / "ds", data)
        first.send_signal(signal.SIGTERM)
        first.wait()
    assert len(list(tmp_path.glob(".ds.tmp-*"))) == 1
    info = prepare(spark, "hls4ml", str(tmp_path / "a.h5"), tmp_path / "ds", data)
    assert sum(info.n_jets(s) for s in schema.SPLITS) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "ds"]
    assert "left by a writer of ds that was stopped mid-write" in package_log.text


@pytest.mark.slow
def test_one_writer_per_run_and_an_interrupted_run_says_how_to_continue(synthetic_dataset, tmp_path):
    """A run being trained refuses a second training into it and a --resume of it (exit 75, naming the holder);
    SIGTERM to its spark-submit (a scheduler) and Ctrl-C (SIGINT to the terminal's process group) end it with one
    line naming the last checkpoint and the --resume command; the lock dies with the job, so --resume then works."""
    run_dir = tmp_path / "run"
    first = _start_training(tmp_path / "first.err", "--config", str(ROOT / "conf/local.yaml"), "--output",
                            str(run_dir), "--data", str(synthetic_dataset[0]), "train.epochs=200", *STACK,
                            *SMALL_MODEL)  # fmt: skip
    try:
        _wait_for_checkpoint(run_dir, first, after=0)
        holder = json.loads((tmp_path / ".run.lock").read_text())
        refused_jobs = [  # at the same time: each is refused as soon as its Spark session is up
            _start_training(tmp_path / "second.err", "--resume", str(run_dir)),
            _start_training(
                tmp_path / "third.err", "--config", str(ROOT / "conf/local.yaml"), "--output", str(run_dir)
            ),  # fmt: skip
        ]
        for refused in refused_jobs:
            stderr = _finished(refused, timeout=300)
            assert refused.returncode == errors.EXIT_BUSY, stderr[-3000:]
            assert _error_lines(stderr) == [
                f"error: {run_dir}: another job is writing this training run (pid {holder['pid']} on "
                f"{holder['host']}, started {holder['started_at']}: {holder['command']}); wait for it to finish and "
                "retry (exit 75), or write elsewhere"
            ]
        assert holder["command"].startswith("train.py --config")
        first.send_signal(signal.SIGTERM)  # to spark-submit's JVM, as a scheduler stops a job
        _assert_interrupted(first, run_dir, errors.EXIT_TERMINATED, "Spark was shut down under the job")
    finally:
        _stop(first)
    # Ctrl-C and the lock's end: test_ctrl_c_at_any_moment_ends_the_job_in_one_line_and_nothing_runs_on


def _when_the_ranks_start(job: subprocess.Popen, run_dir: Path) -> None:
    _wait_for_line(job, "[launcher] 2 rank(s)")


def _as_a_checkpoint_is_written(job: subprocess.Popen, run_dir: Path) -> None:
    _wait_for_checkpoint(run_dir, job, after=_epochs_done(run_dir), poll=0.02)


def _mid_epoch(job: subprocess.Popen, run_dir: Path) -> None:
    _wait_for_checkpoint(run_dir, job, after=_epochs_done(run_dir), poll=0.02)
    time.sleep(0.5)  # the next epoch's steps (an epoch of this tiny run takes 1-2 s)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [pytest.param("horovod", marks=needs_horovod),
                                      pytest.param("barrier", marks=pytest.mark.portable)])  # fmt: skip
def test_ctrl_c_at_any_moment_ends_the_job_in_one_line_and_nothing_runs_on(synthetic_dataset, tmp_path, launcher):
    """Ctrl-C (SIGINT to the terminal's process group: the JVM, the driver, Spark's Python workers and the ranks
    all get it, in no set order) at several moments of a run: as a checkpoint is written, while the ranks start,
    mid-epoch. Every time: exit 130, one line naming the last checkpoint and the --resume command (no traceback,
    no Java trace, no executor echo of the killed workers), no process of the job left, and the lock gone with the
    job, so --resume takes the run on each time from where it stopped."""
    run_dir = tmp_path / "run"
    training = ["--config", str(ROOT / "conf/local.yaml"), "--output", str(run_dir), "--data",
                str(synthetic_dataset[0]), "train.epochs=200", f"run.launcher={launcher}", STACK[1],
                *SMALL_MODEL]  # fmt: skip
    moments, epochs_done = [_as_a_checkpoint_is_written, _when_the_ranks_start, _mid_epoch], []
    for attempt, moment in enumerate(moments):
        args = training if attempt == 0 else ["--resume", str(run_dir)]
        job = _start_training(tmp_path / f"{attempt}-{moment.__name__}.err", *args)
        try:
            moment(job, run_dir)
            os.killpg(job.pid, signal.SIGINT)
            _assert_interrupted(job, run_dir, errors.EXIT_INTERRUPTED, "")
            assert _left_running(session=job.pid) == [], moment.__name__
        finally:
            _stop(job)
        epochs_done.append(_epochs_done(run_dir))
    assert epochs_done[0] >= 1 and epochs_done[-1] > epochs_done[0], epochs_done  # each resume went on from the last
    assert "resumed from" in (run_dir / "train.log").read_text()


@pytest.mark.portable
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize(
    "stop, code, how",
    [
        (lambda: (_ for _ in ()).throw(KeyboardInterrupt()), errors.EXIT_INTERRUPTED, "Ctrl-C"),
        (lambda: os.kill(os.getpid(), signal.SIGTERM) or time.sleep(5), errors.EXIT_TERMINATED, "SIGTERM"),
        (lambda: (_ for _ in ()).throw(RuntimeError("Job 0 cancelled because SparkContext was shut down")),
         errors.EXIT_TERMINATED,
         "Spark was shut down under the job: spark-submit stopped by a signal, or its JVM failed"),
        # the race: Ctrl-C reaches spark-submit's JVM too, and stopping the session on the way out fails
        (lambda: _unwinding(KeyboardInterrupt(), RuntimeError("SparkSession does not exist in the JVM")),
         errors.EXIT_INTERRUPTED, "Ctrl-C"),
        (lambda: _unwinding(errors.Terminated(), ValueError("an error of any kind while unwinding")),
         errors.EXIT_TERMINATED, "SIGTERM"),
        # Ctrl-C: spark-submit's JVM, shutting down, answers a py4j call with a bare failure (pyspark 4)
        (lambda: (_ for _ in ()).throw(_bare_py4j_error("o39.statusTracker")), errors.EXIT_TERMINATED,
         "Spark was shut down under the job: spark-submit stopped by a signal, or its JVM failed"),
        # SIGTERM to spark-submit: a py4j error whose text the stopped JVM can no longer give (str() raises)
        (lambda: _unwinding(RuntimeError("Job 0 cancelled"), _JvmGoneError()), errors.EXIT_TERMINATED,
         "Spark was shut down under the job: spark-submit stopped by a signal, or its JVM failed"),
    ],
)  # fmt: skip
def test_every_kind_of_interrupt_is_one_line_and_its_exit_code(stop, code, how, capsys, monkeypatch):
    from ucluster_spark.driver import cli

    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # restored after the test

    def body() -> int:
        stop()
        return 0

    assert cli.run_main(body, lambda: "nothing was written to out: run the same command again") == code
    # horovod's output-forwarding threads fail once the job has stopped ("Pipe is closed"), after run_main returned
    horovod_thread = threading.Thread(target=exec, args=(compile("raise RuntimeError('Pipe is closed')",
                                                                 "/site-packages/horovod/runner/util/streams.py",
                                                                 "exec"),))  # fmt: skip
    horovod_thread.start()
    horovod_thread.join()
    assert capsys.readouterr().err == f"interrupted ({how}): nothing was written to out: run the same command again\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the job's handler is gone again


class _JvmGoneError(Exception):
    """As py4j's ``Py4JJavaError``, whose ``str`` asks the JVM for the Java exception's text."""

    def __str__(self) -> str:
        raise ConnectionRefusedError(111, "Connection refused")


def _unwinding(interrupt: BaseException, then: Exception) -> None:
    """``then`` raised while the job unwinds from ``interrupt`` (in a ``finally``, as the job's session stop is)."""
    try:
        raise interrupt
    finally:
        raise then


@pytest.mark.portable
def test_only_a_py4j_failure_without_a_word_from_the_jvm_counts_as_the_jvm_going_away():
    from py4j.protocol import Py4JError

    assert errors.spark_stopped(_bare_py4j_error("o39.statusTracker"))
    trace = "py4j.Py4JException: Method foo([]) does not exist\n\tat py4j.reflection.ReflectionEngine.getMethod"
    traced = Py4JError(f"An error occurred while calling o39.foo. Trace:\n{trace}\n")
    assert not errors.spark_stopped(traced)  # the JVM answered: a bug of ours, shown with its traceback


@pytest.mark.portable
@pytest.mark.parametrize("message", ["Exception while sending command.", "KeyboardInterrupt while sending command."])
def test_py4j_s_echo_of_a_stop_is_not_shown_and_its_other_records_are(message):
    """py4j logs these on the root logger, with a traceback, when the JVM goes away or Ctrl-C comes during a call,
    then raises to the job, which reports it in one line."""
    from ucluster_spark import logs

    logs.configure()
    root = logging.getLogger()

    def record(text: str, path: str) -> logging.LogRecord:
        return logging.LogRecord("root", logging.ERROR, path, 1038, text, None, None)

    gateway = "/site-packages/pyspark/python/lib/py4j-0.10.9.7-src.zip/py4j/java_gateway.py"
    assert not root.filter(record(message, gateway))
    assert root.filter(record("An error of py4j's own", gateway))
    assert root.filter(record(message, "/work/somewhere/else.py"))


def _bare_py4j_error(call: str) -> Exception:
    from py4j.protocol import Py4JError

    return Py4JError(f"An error occurred while calling {call}")


def _start_training(stderr: Path, *args: str) -> subprocess.Popen:
    """``spark-submit jobs/train.py ARGS`` as a terminal runs it (its own process group, Ctrl-C not ignored), its
    stderr in a file (a pipe nobody reads would stall the job once full)."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    with open(stderr, "w") as log:
        job = subprocess.Popen(
            [str(SPARK_SUBMIT), "--master", "local[2]", str(ROOT / "jobs/train.py"), *args],
            cwd=stderr.parent, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
    job.stderr_path = stderr
    return job


def _finished(job: subprocess.Popen, timeout: float) -> str:
    """The job's stderr once it has ended (``timeout``: a hang fails the test)."""
    job.wait(timeout=timeout)
    return job.stderr_path.read_text()


def _wait_for_checkpoint(run_dir: Path, job: subprocess.Popen, after: int, timeout: float = 600,
                         poll: float = 1.0) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, job.stderr_path.read_text()[-4000:]
        if _epochs_done(run_dir) > after:
            return
        time.sleep(poll)
    raise AssertionError(f"no checkpoint after epoch {after} within {timeout} s")


def _epochs_done(run_dir: Path) -> int:
    last = checkpoint.latest(run_dir) if (run_dir / "checkpoints").exists() else None
    return checkpoint.read_state(last).epochs_done if last is not None else 0


def _wait_for_line(job: subprocess.Popen, text: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while text not in job.stderr_path.read_text():
        assert job.poll() is None and time.monotonic() < deadline, job.stderr_path.read_text()[-4000:]
        time.sleep(0.02)


def _left_running(session: int, grace: float = 15) -> list[str]:
    """The processes still in the job's session (its JVM, driver, Python workers, ranks) after ``grace`` s."""
    deadline = time.monotonic() + grace
    while True:
        left = []
        for process in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(OSError, psutil.Error):
                if os.getsid(process.pid) == session:
                    left.append(f"{process.pid}: {' '.join(process.info['cmdline'] or [])[:200]}")
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _assert_interrupted(job: subprocess.Popen, run_dir: Path, code: int, cause: str) -> None:
    started = time.monotonic()
    job.wait(timeout=120)
    assert time.monotonic() - started < 60
    time.sleep(3)  # the job's Python driver writes its last line as the JVM exits
    stderr = job.stderr_path.read_text()
    assert job.returncode == code, stderr[-4000:]
    last = checkpoint.latest(run_dir)
    lines = [line for line in stderr.splitlines() if line.startswith(("interrupted", "error:", "Traceback"))]
    assert len(lines) == 1 and lines[0].startswith("interrupted") and cause in lines[0], stderr[-4000:]
    assert lines[0].endswith(
        f"training into {run_dir} stopped; its last checkpoint is {last.name}: continue with "
        f"spark-submit jobs/train.py --resume {run_dir}"
    )
    assert "Traceback" not in stderr and "\tat org.apache" not in stderr and "Py4J" not in stderr
    assert "ERROR Executor" not in stderr, stderr[-4000:]  # the killed Python workers' echo
    assert not (run_dir / "metrics.json").exists()


def _stop(job: subprocess.Popen) -> None:
    if job.poll() is None:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("error:", "Traceback"))]


# ---- 2. divergence stops the run; a degenerate end is said -----------------------------------------------------------


@pytest.mark.portable  # the barrier launcher in the current-releases environment
def test_a_non_finite_step_stops_every_rank_at_once_naming_the_step_and_the_setting(spark, synthetic_dataset, tmp_path):
    from ucluster_spark.driver.launcher import train

    cfg = config.load(ROOT / "conf/local.yaml", [f"data.path={synthetic_dataset[0]}", f"run.output={tmp_path / 'run'}",
                                                 "train.learning_rate=1e30", "train.lr_floor=1e30", *STACK,
                                                 *SMALL_MODEL])  # fmt: skip
    started = time.monotonic()
    with pytest.raises(errors.TrainingDiverged) as diverged:
        train(spark, cfg)
    assert str(diverged.value) == (
        "training diverged in epoch 1, at step 2: the gradient averaged over the ranks is not finite (loss nan, "
        "focal nan, clustering per jet nan); likely cause: train.learning_rate=1e+30 is far above the usual 1e-4 "
        "to 1e-3; no checkpoint was written: train again with a corrected setting"
    )
    assert errors.exit_code_for(diverged.value) == errors.EXIT_TRAINING_FAILED
    assert time.monotonic() - started < 240  # at once, not after the epochs
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_an_exploding_loss_fails_the_job_with_exit_3_and_one_line(synthetic_dataset, tmp_path):
    result = submit(
        "--config", str(ROOT / "conf/local.yaml"), "--output", str(tmp_path / "run"), "--data",
        str(synthetic_dataset[0]), "train.learning_rate=1e4", "train.lr_floor=1e4", *STACK, *SMALL_MODEL,
        cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert result.returncode == errors.EXIT_TRAINING_FAILED, result.stderr[-4000:]
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-4000:]
    # The first epoch whose mean crosses the rule: 1 or 2 (the first epoch's mean holds the sane first steps too).
    assert re.match(r"error: training diverged in epoch [12], at step \d+: the focal loss exploded: its epoch mean ",
                    lines[0]), lines[0]  # fmt: skip
    assert "likely cause: train.learning_rate=10000 is far above the usual 1e-4 to 1e-3" in lines[0]
    assert result.stdout == "" and not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.portable
def test_a_focal_loss_held_under_its_epsilon_ceiling_still_counts_as_exploded():
    from ucluster_spark.executor.rank.divergence import focal_explosion

    # The as-run epsilon caps the focal loss at -ln(1e-9) = 20.7: a run at lr 1e4 sat at 17.25 from a first 2.9.
    assert focal_explosion(17.25, 2.896, 1e-9).startswith("the focal loss exploded: its epoch mean 17.25 is at its "
                                                          "ceiling -ln(loss.focal_epsilon) = 20.7")  # fmt: skip
    assert focal_explosion(17.25, 2.896, 0.0) == ""  # exact log-softmax: no ceiling, only the ratio counts
    assert focal_explosion(400.0, 2.9, 0.0).startswith("the focal loss exploded: its epoch mean 400 is 138 times")
    # Not diverged: a sane run, the original's model on jets it was not trained on, its golden batch's 11.37.
    assert focal_explosion(0.5, 2.9, 1e-9) == focal_explosion(5.7, 5.5, 1e-9) == focal_explosion(11.37, 5.5, 1e-9) == ""
    assert focal_explosion(19.0, 19.5, 1e-9) == ""  # started there (a warm start): not rising
    assert focal_explosion(17.0, 0.0, 1e-9) == ""  # before the first step's value is known


@pytest.mark.portable
def test_a_degenerate_end_is_named():
    from ucluster_spark.metrics import collapse_warnings, loss_warnings

    history = [
        {"epoch": 0, "initial_focal_loss": 3.0, "focal_loss": 1.0, "beta": 0.0, "clustering_loss_per_jet": 0.1},
        {"epoch": 1, "focal_loss": 0.9, "beta": 10.0, "clustering_loss_per_jet": 0.02},
        {"epoch": 2, "focal_loss": 0.8, "beta": 10.0, "clustering_loss_per_jet": 0.01},
    ]
    assert loss_warnings(history) == []
    history[-1].update(focal_loss=9.0, clustering_loss_per_jet=0.5)
    assert loss_warnings(history) == [
        "the focal loss ended at 9, 3 times its first step's 3",
        "the clustering loss per jet ended at 0.5, 25 times its first clustering epoch's 0.02",
    ]
    assert collapse_warnings([10, 0, 5], [0.1, 0.1, 0.1]) == ["cluster 1 is empty"]


# ---- 3. damaged content is bad input, named by its file ------------------------------------------------------------


def _flipped_copy(synthetic_dataset, tmp_path) -> tuple[Path, Path]:
    """A copy of the dataset with bytes flipped inside a training file's data (its footer intact: row counts pass)."""
    root = tmp_path / "flipped"
    shutil.copytree(synthetic_dataset[0], root)
    victim = sorted((root / "train").glob("*.parquet"))[1]
    data = bytearray(victim.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    victim.write_bytes(bytes(data))
    return root, victim


def test_a_file_damaged_inside_is_refused_before_any_rank_naming_file_and_split(spark, synthetic_dataset, tmp_path):
    from ucluster_spark.driver.launcher import train

    root, victim = _flipped_copy(synthetic_dataset, tmp_path)
    info = load_info(root)
    assert info.checksums["train"][victim.name] and len(info.checksums["test"]) == 4
    check_files(root, info)  # the footers are intact
    message = rf"{victim}: the file is damaged \(CRC-32 [0-9a-f]{{8}}, [0-9a-f]{{8}} when written; split train\)"
    with pytest.raises(DatasetError, match=message):
        verify_checksums(spark, root, info)
    verify_checksums(spark, root, info, ("val", "test"))  # the others are whole
    cfg = config.load(ROOT / "conf/local.yaml", [f"data.path={root}", f"run.output={tmp_path / 'run'}"])
    with pytest.raises(DatasetError, match=message):
        train(spark, cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flipped"]  # no run directory, no lock left


@pytest.mark.slow
def test_evaluate_refuses_a_file_damaged_inside_with_exit_2_and_one_line(finished_run, synthetic_dataset, tmp_path):
    _, run_dir, _ = finished_run
    root, victim = _flipped_copy(synthetic_dataset, tmp_path)
    result = submit("--model", str(run_dir), "--data", str(root), "--output", str(tmp_path / "out"),
                    job="evaluate", cwd=tmp_path, timeout=300)  # fmt: skip
    assert result.returncode == errors.EXIT_BAD_INPUT, result.stderr[-4000:]
    recorded = load_info(root).checksums["train"][victim.name]
    assert _error_lines(result.stderr) == [
        f"error: {victim}: the file is damaged (CRC-32 {_crc(victim)}, {recorded} when written; split train); "
        "write the dataset again or restore the file"
    ]
    assert "\tat org.apache" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flipped"]


@pytest.mark.slow
def test_a_file_damaged_after_the_checks_fails_the_job_naming_it(spark, finished_run, synthetic_dataset, tmp_path):
    """Damaged between the checksum check and the job (or on a copy the job reads): Spark's own check of the file
    (Hadoop's .crc beside it) fails the assignment job, and that is bad input naming the file, not a failed job."""
    from ucluster_spark.driver.evaluate import AssignmentJob, read_jets, read_trained_run

    root, victim = _flipped_copy(synthetic_dataset, tmp_path)
    job = AssignmentJob(spark, read_trained_run(finished_run[1]), batch_size=256)
    message = rf"{victim}: the file cannot be read \(ChecksumException: Checksum error: .*; split train\); the dataset"
    with pytest.raises(DatasetError, match=message):
        job.write(read_jets(spark, root, ["train"]), root, (tmp_path / "out").as_uri())


def _crc(path: Path) -> str:
    import zlib

    return f"{zlib.crc32(path.read_bytes()):08x}"


# ---- 4. an output under a file: exit 2, one line, before Spark starts -----------------------------------------------


@pytest.mark.portable
@pytest.mark.parametrize(
    "job, args",
    [
        (train_job, ["--config", str(ROOT / "conf/local.yaml"), "--output", "{out}"]),
        (evaluate_job, ["--model", "{tmp}/no-run", "--output", "{out}"]),
        (generate_job, ["--classes", "w,z", "--jets-per-class", "10", "--output", "{out}"]),
        (prepare_job, ["--input", "{tmp}/x.h5", "--classes", "w,z", "--output", "{out}"]),
        (pipeline_job, ["--config", str(ROOT / "conf/local.yaml"), "--run-id", "r1", "--root", "{out}"]),
    ],
)
def test_an_output_under_a_file_is_refused_in_every_job(job, args, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    out = str(tmp_path / "notes.txt" / "run")
    code = job.main([a.format(out=out, tmp=tmp_path) for a in args])
    assert code == errors.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    flag = "pipeline.root" if job is pipeline_job else "--output"
    assert _error_lines(err) == [
        f"error: {flag} {out}{'/r1' if job is pipeline_job else ''}: {tmp_path / 'notes.txt'} is a file, not a "
        f"directory; choose another {flag}"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# ---- 6. resuming with another rank count says the result will differ ----------------------------------------------


@pytest.mark.slow
def test_resuming_with_another_rank_count_says_the_result_will_differ(spark, finished_run, tmp_path, package_log):
    from ucluster_spark.driver.launcher import train

    _, finished, _ = finished_run
    run_dir = tmp_path / "run"  # the finished 2-rank run as it was after its first epoch
    run_dir.mkdir()
    shutil.copy(finished / "config.yaml", run_dir)
    shutil.copytree(finished / "checkpoints" / "epoch-0001", run_dir / "checkpoints" / "epoch-0001")
    (run_dir / "checkpoints" / "LATEST").write_text("epoch-0001\n")
    assert checkpoint.read_state(run_dir / "checkpoints" / "epoch-0001").num_proc == 2
    cfg = train_job.training_config(resume=str(run_dir), num_proc=1, overrides=[])
    result = train(spark, cfg, resume=True)
    assert (
        "resuming a 2-rank run with 1 rank(s): the shards, the batches and the global batch (16 jets, was 32) "
        "differ, so the result will differ from the uninterrupted run's; resume with --num-proc 2 to continue it "
        "number for number"
    ) in package_log.text
    assert result.metrics["num_proc"] == 1 and result.metrics["epochs"] == 2
