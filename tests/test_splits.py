"""Protocols: LOSO never leaks a test speaker, random splits are stratified and seeded,
validation always comes from the training part."""

import numpy as np
import pandas as pd
import pytest

from ser_keras.data.splits import make_folds, select_folds
from ser_keras.errors import SerKerasError


def synthetic_manifest(n_speakers=5, labels=("angry", "happy", "neutral", "sad"), per_class=(6, 9, 12, 4),
                       sessions=False):
    rows = []
    for s in range(n_speakers):
        for label, count in zip(labels, per_class):
            for i in range(count + s % 2):  # speakers differ slightly in size
                rows.append({
                    "path": f"/corpus/spk{s}/{label}/{i:03d}.wav", "label": label, "speaker": f"spk{s}",
                    "gender": None, "session": f"Session{s // 2 + 1}" if sessions else None, "duration": 1.0,
                })
    return pd.DataFrame(rows).sort_values("path").reset_index(drop=True)


def _check_partition(folds, n):
    for fold in folds:
        parts = [set(fold.train), set(fold.validation), set(fold.test)]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2], fold.name
        assert len(parts[0] | parts[1] | parts[2]) == n
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests) == list(range(n)), "every utterance is tested exactly once"


def test_loso_never_puts_a_test_speaker_in_train_or_validation():
    manifest = synthetic_manifest()
    folds = make_folds(manifest, "loso", seed=3, validation_fraction=0.2)
    speakers = manifest["speaker"].to_numpy()
    assert [f.name for f in folds] == [f"speaker-spk{s}" for s in range(5)]
    _check_partition(folds, len(manifest))
    for fold in folds:
        test_speakers = set(speakers[fold.test])
        assert len(test_speakers) == 1
        assert not test_speakers & set(speakers[fold.train])
        assert not test_speakers & set(speakers[fold.validation])
        # validation: whole held-out training speakers (round(0.2 * 4) = 1), none in training
        assert len(set(speakers[fold.validation])) == 1
        assert not set(speakers[fold.validation]) & set(speakers[fold.train])


def test_utterance_validation_is_stratified_over_training_speakers():
    manifest = synthetic_manifest()
    folds = make_folds(manifest, "loso", seed=3, validation_fraction=0.2, validation_split="utterances")
    speakers = manifest["speaker"].to_numpy()
    _check_partition(folds, len(manifest))
    for fold in folds:
        assert not set(speakers[fold.test]) & set(speakers[fold.validation])
        # validation draws from every training speaker and every label
        assert set(speakers[fold.validation]) == set(speakers[fold.train])
        assert set(manifest["label"].iloc[fold.validation]) == set(manifest["label"])
        share = len(fold.validation) / (len(fold.validation) + len(fold.train))
        assert 0.12 < share < 0.3


def test_held_out_validation_speakers_alternate_genders():
    manifest = synthetic_manifest(n_speakers=6)
    manifest["gender"] = manifest["speaker"].map(lambda s: "female" if int(s[3:]) % 2 else "male")
    folds = make_folds(manifest, "loso", seed=0, validation_fraction=0.4)
    for fold in folds:
        held_out = manifest.iloc[fold.validation]
        assert held_out["speaker"].nunique() == 2 and held_out["gender"].nunique() == 2
    again = make_folds(manifest, "loso", seed=0, validation_fraction=0.4)
    assert all(np.array_equal(a.validation, b.validation) for a, b in zip(folds, again))
    with pytest.raises(SerKerasError, match="validation_split"):
        make_folds(manifest, "loso", validation_split="sessions")


def test_random_split_is_stratified_seeded_and_deterministic():
    manifest = synthetic_manifest()
    folds = make_folds(manifest, "random", n_folds=5, seed=1, validation_fraction=0.15)
    assert [f.name for f in folds] == [f"random-{k}of5" for k in range(1, 6)]
    _check_partition(folds, len(manifest))
    overall = manifest["label"].value_counts(normalize=True)
    for fold in folds:
        share = manifest["label"].iloc[fold.test].value_counts(normalize=True)
        for label in overall.index:
            assert abs(share.get(label, 0) - overall[label]) < 0.05, (fold.name, label)
    again = make_folds(manifest, "random", n_folds=5, seed=1, validation_fraction=0.15)
    for a, b in zip(folds, again):
        assert a.name == b.name
        for part in ("train", "validation", "test"):
            np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    other = make_folds(manifest, "random", n_folds=5, seed=2, validation_fraction=0.15)
    assert any(not np.array_equal(a.test, b.test) for a, b in zip(folds, other))
    # speaker-dependent: test speakers also appear in training
    speakers = manifest["speaker"].to_numpy()
    assert set(speakers[folds[0].test]) & set(speakers[folds[0].train])


def test_session_protocol_and_its_errors():
    manifest = synthetic_manifest(n_speakers=4, sessions=True)
    folds = make_folds(manifest, "session", validation_fraction=0.1)
    assert [f.name for f in folds] == ["session-Session1", "session-Session2"]
    _check_partition(folds, len(manifest))
    sessions = manifest["session"].to_numpy()
    for fold in folds:
        assert not set(sessions[fold.test]) & set(sessions[fold.train])
    with pytest.raises(SerKerasError, match="session"):
        make_folds(synthetic_manifest(), "session")
    with pytest.raises(SerKerasError, match="protocol"):
        make_folds(manifest, "kfold")
    with pytest.raises(SerKerasError, match="runtime.fold"):
        select_folds(folds, 5)
    assert select_folds(folds, 1) == [folds[1]]


def test_zero_validation_fraction_gives_no_validation():
    folds = make_folds(synthetic_manifest(), "loso", validation_fraction=0.0)
    assert all(len(f.validation) == 0 for f in folds)


def test_demo_corpus_folds():
    from ser_keras.config import DataConfig
    from ser_keras.corpora import load_manifest

    manifest = load_manifest("demo", None, DataConfig(corpus="demo"))
    folds = make_folds(manifest, "loso", seed=0, validation_fraction=0.15)
    assert len(folds) == manifest["speaker"].nunique()
    _check_partition(folds, len(manifest))


def test_auto_validation_keeps_at_least_three_training_speakers():
    """Four speakers (CASIA, the demo): a LOSO fold has three training speakers; holding one
    out would train on two, so `auto` samples utterances of all three instead. Explicit
    `speakers` still holds a speaker out."""
    manifest = synthetic_manifest(n_speakers=4)
    speakers = manifest["speaker"].to_numpy()
    for fold in make_folds(manifest, "loso", seed=0, validation_fraction=0.2):
        assert set(speakers[fold.validation]) == set(speakers[fold.train]) and len(set(speakers[fold.train])) == 3
    for fold in make_folds(manifest, "loso", seed=0, validation_fraction=0.2, validation_split="speakers"):
        assert len(set(speakers[fold.train])) == 2 and not set(speakers[fold.validation]) & set(speakers[fold.train])
