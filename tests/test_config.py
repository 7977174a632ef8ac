"""Config resolution: defaults < YAML < per-corpus block < --set; unknown keys are errors."""

import pytest

from ser_keras.config import Config, RuntimeConfig, load_config
from ser_keras.rundir import load_run_config, save_run_config
from ser_keras.errors import SerKerasError


def write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_then_corpus_block_then_set(tmp_path):
    path = write(tmp_path, "train:\n  epochs: 7\n  seed: 3\ncorpora:\n  casia:\n    train:\n      epochs: 9\n")
    assert load_config(config_file=path, corpus="emodb").train.epochs == 7
    config = load_config(config_file=path, corpus="casia", overrides=["train.seed=11"])
    assert (config.train.epochs, config.train.seed, config.data.corpus) == (9, 11, "casia")


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "features:\n  hop_ms: 10\n  bogus: 1\n")
    with pytest.raises(SerKerasError, match=r"features\.bogus") as info:
        load_config(config_file=path)
    assert path in str(info.value)


def test_unknown_set_key_is_an_error(tmp_path):
    with pytest.raises(SerKerasError, match=r"train\.epoch"):
        load_config(config_file=write(tmp_path, "{}"), overrides=["train.epoch=3"])


def test_set_value_types_are_checked(tmp_path):
    path = write(tmp_path, "{}")
    assert load_config(config_file=path, overrides=["model.bidirectional=false"]).model.bidirectional is False
    assert load_config(config_file=path, overrides=["sae.kernel_sizes=[3,6]"]).sae.kernel_sizes == [3, 6]
    with pytest.raises(SerKerasError, match="train.epochs"):
        load_config(config_file=path, overrides=["train.epochs=many"])


def test_bad_choice_is_rejected(tmp_path):
    with pytest.raises(SerKerasError, match="protocol"):
        load_config(config_file=write(tmp_path, "train:\n  protocol: leave-two-out\n"))


def test_run_config_round_trip(tmp_path):
    config = Config()
    config.train.epochs = 3
    save_run_config(config, tmp_path, ["angry", "sad"])
    loaded, labels = load_run_config(tmp_path)
    assert loaded == config and labels == ["angry", "sad"]
    assert "ser_keras_version" in (tmp_path / "config.yaml").read_text()


def test_extends_merges_the_base_file(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  lstm_units: 9\n  dropout: 0.3\ntrain:\n  epochs: 4\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nmodel:\n  dropout: 0.1\n")
    config = load_config(config_file=str(child))
    assert (config.model.lstm_units, config.model.dropout, config.train.epochs) == (9, 0.1, 4)
    (tmp_path / "base.yaml").write_text("extends: child.yaml\n")
    with pytest.raises(SerKerasError, match="loops"):
        load_config(config_file=str(child))


def test_model_fields_are_checked(tmp_path):
    with pytest.raises(SerKerasError, match="model.frontend"):
        load_config(experiment="exp4", overrides=["model.frontend=resnet"])
    with pytest.raises(SerKerasError, match="does not suit"):
        load_config(experiment="exp4", overrides=["model.classifier=svm"])


def test_a_run_config_with_a_key_this_version_lacks_is_refused_naming_file_key_and_versions(tmp_path):
    """The project has no release: a run written with a setting since removed (here the former
    train.mixup) cannot be rebuilt by this code, and says so in one line."""
    from ser_keras import __version__

    (tmp_path / "config.yaml").write_text("ser_keras_version: 0.0.1\nlabels: [a, b]\n"
                                          "config:\n  train:\n    mixup: 0.4\n")
    with pytest.raises(SerKerasError) as info:
        load_run_config(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "config.yaml") in message and "'train.mixup'" in message and "\n" not in message
    assert "ser_keras 0.0.1" in message and __version__ in message


@pytest.mark.parametrize("experiment", ["exp1", "exp2", "exp3", "exp4", "exp5"])
def test_shipped_experiment_configs_load(experiment):
    config = load_config(experiment=experiment, corpus="demo")
    assert config.model.experiment == experiment


def test_the_defaults_are_what_fit_runs_with_no_flags():
    """Config() is the default experiment's config (what `ser-keras fit` runs without
    --experiment or --set), but for the front end: FeatureConfig keeps the paper's (no warps,
    level normalisation, pitch channels or test-time views), which the feature code and its
    tests take as the plain front end; DEFAULT_EXPERIMENT's YAML turns those on."""
    import dataclasses

    from ser_keras.config import DEFAULT_EXPERIMENT

    default, config = load_config(corpus="demo"), Config()
    assert config.model.experiment == default.model.experiment == DEFAULT_EXPERIMENT
    for section in ("data", "sae", "model", "train", "runtime"):
        assert getattr(config, section) == getattr(default, section), section
    differing = {f.name for f in dataclasses.fields(config.features)
                 if getattr(config.features, f.name) != getattr(default.features, f.name)}
    assert differing == {"warp_factors", "level_normalization", "level_floor_db", "pitch_channels",
                         "test_warp_factors"}


def test_runtime_settings_live_in_the_runtime_section_only(tmp_path):
    path = write(tmp_path, "runtime:\n  jobs: 2\n  cache_dir: /c\n")
    config = load_config(config_file=path, overrides=["runtime.fold=1", "runtime.svm_jobs=2"])
    assert (config.runtime.jobs, config.runtime.cache_dir, config.runtime.fold, config.runtime.svm_jobs) == \
        (2, "/c", 1, 2)
    with pytest.raises(SerKerasError, match=r"unknown config key 'train\.fold'"):
        load_config(config_file=path, overrides=["train.fold=1"])


def test_resume_compares_everything_but_the_runtime_section():
    from ser_keras.training.resume import config_hash, identity

    config, other = Config(), Config()
    other.runtime = RuntimeConfig(data_dir="/d", cache_dir="/c", strategy="mirrored", jobs=1, fold=2,
                                  svm_jobs=3, sweep_block_windows=[1])
    assert identity(config) == identity(other) and config_hash(config) == config_hash(other)
    assert "runtime" not in identity(config) and set(identity(config)) == set(config.to_dict()) - {"runtime"}
    other.features.speech_min_ms = 50.0
    assert config_hash(config) != config_hash(other)


@pytest.mark.parametrize("override, message", [
    ("train.class_weight=inverse", r"^train\.class_weight: 'inverse' is not one of none, balanced$"),
    ("sae.sparsity=1.5", r"^sae\.sparsity: must be in \(0, 1\), got 1\.5$"),
    ("model.dropout=1.0", r"^model\.dropout: must be in \[0, 1\), got 1\.0$"),
    ("features.normalization=zscore", r"^features\.normalization: 'zscore' is not one of neutral_speaker"),
    ("features.warp_factors=[3.0]", r"^features\.warp_factors: 3\.0 must be in \[0\.5, 2\] and not 1$"),
    ("features.test_warp_factors=[1.0]", r"^features\.test_warp_factors: 1\.0 must be in \[0\.5, 2\] and not 1$"),
    ("runtime.strategy=tpu", r"^runtime\.strategy: 'tpu' is not one of default, mirrored, multi-worker$"),
    ("train.validation_split=half", r"^train\.validation_split: 'half' is not one of auto"),
    ("train.ema_momentum=1.0", r"^train\.ema_momentum: must be in \(0, 1\) \(or null\), got 1\.0$"),
    ("model.statistics_units=-1", r"^model\.statistics_units: must be >= 0, got -1$"),
])
def test_validate_refuses_bad_values_in_one_line_naming_key_and_value(override, message):
    with pytest.raises(SerKerasError, match=message) as info:
        load_config(experiment="exp4", overrides=[override])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("experiment", ["exp1", "exp2"])
def test_test_time_views_need_a_spectrogram(experiment):
    with pytest.raises(SerKerasError, match=r"^features\.test_warp_factors: test-time views warp the spectrogram"):
        load_config(experiment=experiment, overrides=["features.test_warp_factors=[0.9]"])


def test_the_cli_offers_the_choices_the_config_allows():
    from ser_keras import cli, config as config_module

    parser = cli.build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    options = {a.dest: a.choices for a in subcommands["fit"]._actions}
    assert options["protocol"] == config_module.PROTOCOLS and options["strategy"] == config_module.STRATEGIES
    reproduce = {a.dest: a.choices for a in subcommands["reproduce"]._actions}
    assert set(reproduce["protocol"]) == set(config_module.PROTOCOLS) - {"all"}


def test_experiments_are_the_yaml_files_that_name_one_and_extend_without_repeating():
    """base.yaml (what every experiment shares) is no experiment; a YAML that extends another
    sets only what differs from it."""
    from ser_keras.config import experiment_names, experiments_dir, load_experiment_yaml, load_yaml

    assert experiment_names() == ["exp1", "exp2", "exp3", "exp4", "exp5"]
    assert (experiments_dir() / "base.yaml").is_file()

    def leaves(data, prefix=""):
        for key, value in data.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    for path in sorted(experiments_dir().glob("*.yaml")):
        own = load_yaml(path)
        parent = own.pop("extends", None)
        if parent is None:
            continue
        inherited = dict(leaves(load_experiment_yaml(experiments_dir() / parent)))
        repeated = [key for key, value in leaves(own) if key in inherited and inherited[key] == value]
        assert not repeated, f"{path.name} repeats what {parent} sets: {repeated}"
