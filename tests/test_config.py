"""Config resolution: defaults < YAML < per-corpus block < --set; unknown keys are errors."""

import pytest

from ser_keras.config import Config, load_config, load_run_config, save_run_config
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


def test_model_fields_are_checked_and_old_runs_keep_their_meaning(tmp_path):
    with pytest.raises(SerKerasError, match="model.frontend"):
        load_config(experiment="exp4", overrides=["model.frontend=resnet"])
    with pytest.raises(SerKerasError, match="does not suit"):
        load_config(experiment="exp4", overrides=["model.classifier=svm"])
    # A run directory written before the model fields existed names only its experiment.
    (tmp_path / "config.yaml").write_text("labels: [a, b]\nconfig:\n  model:\n    experiment: exp2\n")
    old, _ = load_run_config(tmp_path)
    assert (old.model.classifier, old.model.input_features, old.model.frontend) == ("network", "lld", "dense")


@pytest.mark.parametrize("experiment", ["exp1", "exp2", "exp3", "exp4", "exp5"])
def test_shipped_experiment_configs_load(experiment):
    config = load_config(experiment=experiment, corpus="demo")
    assert config.model.experiment == experiment
