"""Bad input found by trying the jobs as a new user would: each is refused with one line naming it, exit code 2,
and nothing written or deleted."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import ROOT, submit
from tests.sample_files.hls4ml import jet_values, write_file
from ucluster_spark import config, errors, schema
from ucluster_spark.config import ConfigError
from ucluster_spark.data.dataset import DatasetError, check_files, load_info, write_dataset
from ucluster_spark.data.sources import prepare
from ucluster_spark.driver import cli
from ucluster_spark.jobs import evaluate as evaluate_job
from ucluster_spark.jobs import pipeline as pipeline_job
from ucluster_spark.jobs import prepare as prepare_job
from ucluster_spark.jobs import train as train_job

WZT = config.load(None, ["data.classes=[w,z,t]", "data.files_per_split=2"]).data


def _users_folder(path):
    path.mkdir()
    (path / "thesis.tex").write_text("years of work")
    (path / "plots").mkdir()
    return path


def _untouched(path):
    return (path / "thesis.tex").read_text() == "years of work" and (path / "plots").is_dir()


# ---- 1. --overwrite replaces only what is provably ours ------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_dataset_is_never_written_over_a_users_folder(spark, tmp_path, overwrite):
    write_file(tmp_path / "a.h5", jet_values(20, seed=1))
    target = _users_folder(tmp_path / "mine")
    with pytest.raises(DatasetError, match=r"mine exists and is not a ucluster dataset \(holds plots/, thesis.tex\)"):
        prepare(spark, "hls4ml", str(tmp_path / "a.h5"), target, WZT, overwrite=overwrite)
    assert _untouched(target) and sorted(p.name for p in target.iterdir()) == ["plots", "thesis.tex"]


def test_a_file_an_empty_folder_and_a_dataset_at_the_output(spark, tmp_path):
    write_file(tmp_path / "a.h5", jet_values(20, seed=1))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"notes.txt exists and is not a ucluster dataset \(a file\)"):
        prepare(spark, "hls4ml", str(tmp_path / "a.h5"), tmp_path / "notes.txt", WZT, overwrite=True)
    (tmp_path / "empty").mkdir()
    prepare(spark, "hls4ml", str(tmp_path / "a.h5"), tmp_path / "empty", WZT)  # nothing to lose: used
    with pytest.raises(DatasetError, match="empty already holds a ucluster dataset; pass --overwrite"):
        prepare(spark, "hls4ml", str(tmp_path / "a.h5"), tmp_path / "empty", WZT)
    prepare(spark, "hls4ml", str(tmp_path / "a.h5"), tmp_path / "empty", WZT, overwrite=True)  # ours: replaced


@pytest.mark.slow
def test_evaluate_never_writes_over_a_users_folder_or_a_run(spark, finished_run, tmp_path):
    from ucluster_spark.driver.evaluate import evaluate

    _, run_dir, _ = finished_run
    target = _users_folder(tmp_path / "mine")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="mine exists and is not a cluster-assignment output"):
            evaluate(spark, run_dir, None, target, overwrite=overwrite)
    assert _untouched(target)
    with pytest.raises(FileExistsError, match="is not a cluster-assignment output"):
        evaluate(spark, run_dir, None, run_dir, overwrite=True)  # a training run is not an evaluation output
    assert (run_dir / "metrics.json").exists() and (run_dir / "model").is_dir()


# ---- 2. a damaged dataset is refused before any rank or task starts -------------------------------------------------


def _damaged_copy(synthetic_dataset, tmp_path):
    root = tmp_path / "damaged"
    shutil.copytree(synthetic_dataset[0], root)
    victim = sorted((root / "train").glob("*.parquet"))[1]
    victim.unlink()
    return root, victim.name


def test_the_dataset_records_its_files_and_a_missing_one_is_named(synthetic_dataset, tmp_path):
    root, info, _ = synthetic_dataset
    assert sum(info.files["train"].values()) == info.n_jets("train") and len(info.files["train"]) == 4
    check_files(root, info)
    damaged, missing = _damaged_copy(synthetic_dataset, tmp_path)
    with pytest.raises(DatasetError, match=rf"damaged/train: the dataset is damaged: missing {missing} \(\d+ jets\)"):
        check_files(damaged, load_info(damaged))
    extra = damaged / "test" / "part-extra.parquet"
    shutil.copy(next((damaged / "val").glob("*.parquet")), extra)
    with pytest.raises(DatasetError, match="unexpected part-extra.parquet"):
        check_files(damaged, load_info(damaged), ("test",))
    extra.write_bytes(b"PAR1 truncated")
    with pytest.raises(DatasetError, match="part-extra.parquet: not a readable parquet file"):
        check_files(damaged, load_info(damaged), ("test",))


@pytest.mark.parametrize("key", ["files", "checksums"])
def test_a_dataset_written_before_files_and_checksums_were_recorded_is_refused(synthetic_dataset, tmp_path, key):
    old = tmp_path / "old"
    shutil.copytree(synthetic_dataset[0], old)
    meta = json.loads((old / schema.METADATA_FILE).read_text())
    del meta[key]
    (old / schema.METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"written by an earlier ucluster-spark, .* write the dataset again"):
        load_info(old)


def test_training_refuses_a_damaged_dataset_before_any_rank_starts(spark, synthetic_dataset, tmp_path):
    from ucluster_spark.driver.launcher import train

    damaged, missing = _damaged_copy(synthetic_dataset, tmp_path)
    cfg = config.load(ROOT / "conf/local.yaml", [f"data.path={damaged}", f"run.output={tmp_path / 'run'}"])
    with pytest.raises(DatasetError, match=f"missing {missing}"):
        train(spark, cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_evaluate_refuses_a_damaged_dataset_naming_the_file(spark, finished_run, synthetic_dataset, tmp_path):
    from ucluster_spark.driver.evaluate import evaluate

    damaged, missing = _damaged_copy(synthetic_dataset, tmp_path)
    with pytest.raises(DatasetError, match=f"missing {missing}"):
        evaluate(spark, finished_run[1], damaged, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert errors.exit_code_for(DatasetError("x")) == errors.EXIT_BAD_INPUT


# ---- 3. chunks that keep no jets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [2, None])
def test_a_dataset_of_another_format_version_is_refused_naming_both(synthetic_dataset, tmp_path, version):
    other, _ = _damaged_copy(synthetic_dataset, tmp_path)
    meta = json.loads((other / schema.METADATA_FILE).read_text())
    meta["format_version"] = version
    (other / schema.METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=rf"dataset format version {version!r}, but this ucluster-spark reads "
                                           r"version 1 .*: write the dataset again"):  # fmt: skip
        load_info(other)


def test_a_chunk_that_keeps_no_jets_is_normal_and_a_dataset_with_none_is_bad_input(spark, tmp_path):
    windowed = config.load(None, ["data.classes=[w,z,t]", "data.files_per_split=2", "data.mass_window=[10,200]"]).data
    (tmp_path / "in").mkdir()
    write_file(tmp_path / "in" / "kept.h5", jet_values(30, seed=2))
    heavy = jet_values(30, seed=3)
    heavy["j_mass"][:] = 5000.0  # every jet of this file is outside the window: its chunk keeps none
    write_file(tmp_path / "in" / "heavy.h5", heavy)
    info = prepare(spark, "hls4ml", str(tmp_path / "in" / "*.h5"), tmp_path / "ds", windowed)
    assert info.source["dropped"]["outside_mass_window"] >= 18 and sum(info.n_jets(s) for s in schema.SPLITS) > 0
    narrow = config.load(None, ["data.classes=[w,z,t]", "data.mass_window=[5000,6000]"]).data
    with pytest.raises(
        DatasetError, match=r"no jets kept from 30 jets read: dropped 12 not requested class, 18 outside mass window"
    ):
        prepare(spark, "hls4ml", str(tmp_path / "in" / "kept.h5"), tmp_path / "none", narrow)
    assert not (tmp_path / "none").exists()
    tops = config.load(None, ["data.classes=[t]"]).data
    write_file(tmp_path / "gqwz.h5", jet_values(4, seed=5))  # classes cycle g, q, w, z: no top
    with pytest.raises(DatasetError, match=r"no jets kept from 4 jets read: dropped 4 not requested class"):
        prepare(spark, "hls4ml", str(tmp_path / "gqwz.h5"), tmp_path / "none", tops)


def test_write_dataset_refuses_an_empty_frame(spark, tmp_path):
    empty = spark.createDataFrame([], schema=schema.spark_schema())
    with pytest.raises(DatasetError, match="no jets kept; nothing was written"):
        write_dataset(spark, empty, tmp_path / "ds", WZT, {"generator": "test"})
    assert not (tmp_path / "ds").exists()


# ---- 4. flag values are applied as they are; errors name their source ------------------------------------------------


def _train_config(*argv):
    return train_job.config_from_args(train_job.parser().parse_args(["--config", str(ROOT / "conf/local.yaml"), *argv]))


def test_flag_values_are_typed_not_reparsed_as_yaml():
    assert _train_config("--output", "/tmp/x/run #1").run.output == "/tmp/x/run #1"
    assert _train_config("--output", "2024").run.output == "2024"
    assert _train_config("--data", "yes").data.path == "yes"
    assert _train_config("run.output=runs/a #1").run.output == "runs/a #1"  # a string setting takes the text
    args = pipeline_job.parser().parse_args(["--config", str(ROOT / "conf/local.yaml"), "--run-id", "a"])
    args.root = "null"
    assert pipeline_job.config_from_args(args).pipeline.root == "null"
    evaluate = evaluate_job.parser().parse_args(["--model", "m", "--output", "o", "--splits", "test, val"])
    assert evaluate_job.config_from_args(evaluate).evaluate.splits == ["test", "val"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train.epochs=abc"], r"^override 'train.epochs=abc': train.epochs: expected int, got 'abc'$"),
        (["--num-proc", "0"], r"^--num-proc: run.num_proc must be > 0, got 0$"),
        # a rule between two settings names both places (train.epochs comes from the file)
        (
            ["train.pretrain_epochs=99"],
            r"^override 'train.pretrain_epochs=99', \S+/conf/local.yaml: train.pretrain_epochs must be in",
        ),
        (["train.lr_floor=1.0"], r"^override 'train.lr_floor=1.0'(, \S+local.yaml)?: train.lr_floor must be in"),
        # object stores: refused by the setting's name, before Spark starts
        (["--output", "s3://bucket/run"], r"^--output: run.output=s3://bucket/run: s3:// is not supported"),
        (["data.path=abfss://jets@acct.dfs.core.windows.net/w"], r"^override 'data.path=abfss://\S+': data.path=abfss"),
        (["train.init_from=gs://bucket/run"], r"train.init_from=gs://bucket/run: gs:// is not supported"),
    ],
)
def test_errors_name_the_flag_or_override_not_the_file(argv, message):
    with pytest.raises(ConfigError, match=message):
        _train_config(*argv)


def test_errors_in_the_file_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: abc\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train.epochs: expected int, got 'abc'"):
        config.load(bad)


# ---- 5 and 7. a configuration that cannot run: exit 2, one line on stderr, nothing created -------------------------


@pytest.mark.slow
def test_more_ranks_than_slots_is_bad_input_with_one_line_on_stderr(tmp_path):
    result = submit(
        "--config", str(ROOT / "conf/local.yaml"), "--output", str(tmp_path / "run"), "--num-proc", "3", cwd=tmp_path
    )
    assert result.returncode == errors.EXIT_BAD_INPUT, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout == ""  # under spark-submit too, errors go to stderr, results alone to stdout
    messages = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert messages == [
        "error: run.num_proc=3 ranks need 3 concurrent Spark task slots, but this application has 2 (2 cores / "
        "spark.task.cpus=1, master local[2]); lower --num-proc or give Spark more cores/executors"
    ]
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run directory, no generated data

    pipeline = submit(
        "--config", str(ROOT / "conf/local.yaml"), "--run-id", "r1", "--root", str(tmp_path / "pipelines"),
        "run.num_proc=3", job="pipeline", cwd=tmp_path,
    )  # fmt: skip
    assert pipeline.returncode == errors.EXIT_BAD_INPUT and "Traceback" not in pipeline.stderr
    assert "error: run.num_proc=3 ranks need 3" in pipeline.stderr and pipeline.stdout == ""
    assert not (tmp_path / "pipelines").exists()


# ---- 6. messages that say what is wrong -----------------------------------------------------------------------------


def test_a_folder_given_as_input_is_named_as_a_folder(spark, tmp_path):
    (tmp_path / "h5s").mkdir()
    with pytest.raises(DatasetError, match=r"h5s is a directory; give the files in it, e.g. --input '.*h5s/\*.h5'"):
        prepare(spark, "hls4ml", str(tmp_path / "h5s"), tmp_path / "ds", WZT)


@pytest.mark.slow
def test_resume_of_a_finished_run_does_not_suggest_output(finished_run):
    from ucluster_spark.driver.run_dir import prepare_run_dir

    run_dir = finished_run[1]
    with pytest.raises(FileExistsError) as err:
        prepare_run_dir(run_dir, resume=True)
    assert "the run is finished" in str(err.value) and "nothing to resume" in str(err.value)
    assert f"--model {run_dir}" in str(err.value) and "choose another --output" not in str(err.value)


def test_data_jobs_check_only_data_settings():
    args = prepare_job.parser().parse_args(["--input", "x.h5", "--output", "o", "--max-constituents", "5"])
    assert cli.data_config_from_args(args).data.max_constituents == 5  # model.k_neighbours=10 is not its business
    with pytest.raises(ConfigError, match="^--max-constituents: data.max_constituents must be > 0"):
        cli.data_config_from_args(
            prepare_job.parser().parse_args(["--input", "x.h5", "--output", "o", "--max-constituents", "0"])
        )
    with pytest.raises(ConfigError, match=r"model.k_neighbours must be in \[1, data.max_constituents=5\]"):
        _train_config("data.max_constituents=5")  # training does use it


@pytest.mark.portable
@pytest.mark.parametrize(
    "job, args",
    [
        ("train", ["--config", "conf/local.yaml", "--output", "s3a://bucket/runs/r1"]),
        ("evaluate", ["--model", "runs/any", "--output", "abfss://out@acct.dfs.core.windows.net/eval"]),
        ("generate", ["--output", "gs://bucket/jets"]),
    ],
)
def test_an_object_store_location_is_refused_in_one_line_before_any_work(job, args, tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(ROOT / "jobs" / f"{job}.py"), *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == errors.EXIT_BAD_INPUT, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert ":// is not supported" in lines[0] and "use a local path, a file:// URL or a dbfs:/ path" in lines[0]
