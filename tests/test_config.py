from pathlib import Path

import pytest

from ucluster_spark.config import Config, ConfigError, load

pytestmark = pytest.mark.portable  # no horovod, no petastorm: also in the current-releases environment

ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_config_loads():
    for path in sorted((ROOT / "conf").glob("*.yaml")):
        cfg = load(path)
        assert Config.from_dict(cfg.to_dict()) == cfg


def test_overrides_are_typed_and_win_over_the_file():
    cfg = load(ROOT / "conf/local.yaml", ["train.epochs=9", "data.classes=[w,t]", "loss.alpha_start=2"])
    assert cfg.train.epochs == 9
    assert cfg.data.classes == ["w", "t"]
    assert cfg.loss.alpha_start == 2.0 and isinstance(cfg.loss.alpha_start, float)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", r"unknown key\(s\) \['epoch'\]"),
        ("trainer.epochs=3", r"unknown section\(s\) \['trainer'\]"),
        ("train.epochs=many", "train.epochs: expected int, got 'many'"),
        ("data.classes=[w,x]", "unknown class 'x'"),
        ("train.pretrain_epochs=50", r"train.pretrain_epochs must be in \[0, train.epochs"),
        ("run.num_proc=0", "run.num_proc must be > 0"),
        ("model.n_clusters=1", r"model.n_clusters must be >= 2 \(one cluster is no clustering\), got 1"),
        ("epochs", "expected section.key=value"),
        ("data.aux_mass_columns=[mass,pt]", r"data.aux_mass_columns: \['pt'\] not in"),
        ("data.aux_mass_columns=[mass,mass]", "must list distinct columns"),
        ("data.mass_window=[10]", r"data.mass_window must be \[LO, HI\] with LO < HI \(GeV\), or \[\] .*got \[10\]"),
        ("data.mass_window=[200,10]", r"data.mass_window must be \[LO, HI\] with LO < HI"),
        ("data.mass_window=[a,200]", r"data.mass_window must be \[LO, HI\]"),
        ("data.underlying_event=maybe", "data.underlying_event: expected bool, got 'maybe'"),
        ("pipeline.mass_window=[10,200]", r"pipeline.mass_window: unknown key\(s\) \['mass_window'\] in pipeline"),
        (
            "pipeline.input_format=root",
            r"pipeline.input_format must be one of \['hls4ml', 'jetclass', 'toptagging', 'ntuple'\], got 'root'",
        ),
        ("evaluate.table_mode=merge", "evaluate.table_mode must be append or overwrite, got 'merge'"),
        ("loss.balance_weight=-1", "loss.balance_weight must be >= 0, got -1"),
        ("train.centroid_update=ema", r"train.centroid_update must be one of \['adam', 'sgd', 'kmeans'\]"),
        ("train.centroid_decay=1", r"train.centroid_decay must be in \[0, 1\), got 1"),
        ("train.stop_rule=labels", r"train.stop_rule must be one of \['never', 'assignments', 'loss'\]"),
        ("train.stop_patience=0", "train.stop_patience must be > 0"),
        ("train.validate_every_steps=-1", r"train.validate_every_steps must be >= 0 \(0: at epoch ends only\)"),
        ("loss.alpha_every_jets=-5", r"loss.alpha_every_jets must be >= 0 \(0: once per epoch\)"),
        ("loss.assignment=hard", r"loss.assignment must be one of \['softmax', 'sinkhorn'\]"),
        ("run.use_gloo=false", r"run.use_gloo=False: the setting was removed: Gloo is always Horovod's controller"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load(ROOT / "conf/local.yaml", [override])


def test_exponent_numbers_are_floats_although_yaml_11_reads_them_as_strings(tmp_path):
    cfg = load(None, ["train.lr_floor=1e-5", "train.learning_rate=2E-3"])
    assert cfg.train.lr_floor == 1e-5 and cfg.train.learning_rate == 2e-3
    (tmp_path / "c.yaml").write_text("train:\n  lr_floor: 3e-5\n")
    assert load(tmp_path / "c.yaml").train.lr_floor == 3e-5
    with pytest.raises(ConfigError, match="train.lr_floor: expected float, got 'e-5'"):
        load(None, ["train.lr_floor=e-5"])


def test_mass_window_is_stored_as_floats():
    assert load(None, ["data.mass_window=[10,200]"]).data.mass_window == [10.0, 200.0]
    assert load(None).data.mass_window == [] and load(None).data.underlying_event is True


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(bad)


def test_dump_round_trips(tmp_path):
    cfg = load(ROOT / "conf/local.yaml", ["train.seed=3"])
    cfg.dump(tmp_path / "c.yaml")
    assert load(tmp_path / "c.yaml") == cfg


def test_a_run_written_by_an_earlier_version_still_loads_without_its_retired_setting(tmp_path):
    old = tmp_path / "config.yaml"
    old.write_text("run:\n  num_proc: 2\n  use_gloo: true\n")  # every run's config.yaml held it
    assert load(old).run.num_proc == 2
    old.write_text("run:\n  use_gloo: false\n")
    with pytest.raises(ConfigError, match=r"config.yaml: run.use_gloo=False: the setting was removed"):
        load(old)
