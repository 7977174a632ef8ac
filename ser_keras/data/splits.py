"""Evaluation protocols: a manifest -> named folds of (train, validation, test) row positions.

Three protocols, always named in every output:

- ``loso``: leave-one-speaker-out, one fold per speaker (sorted), named ``speaker-<id>``;
- ``session``: leave-one-session-out (IEMOCAP's Session1..5), named ``session-<id>``;
- ``random``: seeded stratified k-fold over utterances (speaker-*dependent*: a speaker's other
  utterances are in training), named ``random-<k>of<n>`` with k counted from 1;
- ``all``: not a protocol that measures anything but the model to deploy: one fold named
  ``all`` whose training part is every utterance (validation for early stopping taken from it
  as ``loso`` takes it from a fold's training part) and whose test part is empty.

Validation (early stopping, model selection) always comes from the training part of a fold,
never from its test part, in one of two ways (``validation_split``):

- ``speakers``: whole training speakers are held out, ``round(validation_fraction * n)`` of
  the n training speakers (at least 1, at most n - 1; alternating genders where known). The
  validation score is then speaker-independent, like the test condition of ``loso`` and
  ``session``. A stratified sample of the training speakers' utterances was the first choice
  here, but it rewards models that learn the training speakers: on EMO-DB it scored exp4 far
  above what the left-out speakers got, and so it stopped training at the wrong epochs and
  picked the wrong settings (docs/paper.md, *The shipped experiment settings, measured*).
- ``utterances``: per label, ``validation_fraction`` of the training utterances, spread evenly
  over the training speakers (speaker-dependent, like the test condition of ``random``).

``auto`` (the default) takes ``utterances`` for ``random``, and for ``loso``, ``session`` and ``all``
takes ``speakers`` when at least ``MIN_TRAINING_SPEAKERS`` (3) speakers would remain to train on,
``utterances`` otherwise: a corpus of four speakers (CASIA, the demo) leaves three training
speakers per LOSO fold, and holding one of them out trains on two voices, which scored far
worse on CASIA (docs/paper.md, *The shipped experiment settings, measured*). ``speakers`` falls back
to ``utterances`` when a fold has a single training speaker.

Everything is deterministic: the same manifest, protocol, seed and fraction give the same
folds on every machine (the manifest is sorted by path by ``corpora.load_manifest``).
"""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pandas as pd

from ser_keras.config import (PROTOCOL_ALL, PROTOCOL_LOSO, PROTOCOL_RANDOM, PROTOCOL_SESSION, PROTOCOLS, SPLIT_AUTO,
                              SPLIT_SPEAKERS, SPLIT_UTTERANCES, VALIDATION_SPLITS)
from ser_keras.errors import SerKerasError

PROTOCOL_NAMES = {
    PROTOCOL_LOSO: "leave-one-speaker-out",
    PROTOCOL_SESSION: "leave-one-session-out",
    PROTOCOL_RANDOM: "seeded stratified {n}-fold (speaker-dependent)",
    PROTOCOL_ALL: "every speaker (a model to deploy; no test part)",
}
# The fold of protocol "all".
ALL_FOLD = "all"


@dataclasses.dataclass(frozen=True)
class Fold:
    """One fold: integer row positions (``manifest.iloc``) of its three disjoint parts."""

    name: str
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    def to_dict(self, manifest: typing.Optional[pd.DataFrame] = None) -> dict:
        out = {"name": self.name, "train": len(self.train), "validation": len(self.validation),
               "test": len(self.test)}
        if manifest is not None:
            out["test_speakers"] = sorted(set(manifest["speaker"].iloc[self.test]))
        return out


def describe_protocol(protocol: str, n_folds: int) -> str:
    """A human-readable protocol name for reports, e.g. 'leave-one-speaker-out'."""
    return PROTOCOL_NAMES[protocol].format(n=n_folds)


# validation_split=auto holds out speakers only when at least this many remain for training.
MIN_TRAINING_SPEAKERS = 3


def make_folds(
    manifest: pd.DataFrame,
    protocol: str,
    n_folds: int = 10,
    seed: int = 0,
    validation_fraction: float = 0.15,
    validation_split: str = "auto",
) -> typing.List[Fold]:
    """Split `manifest` into folds under `protocol`.

    Args:
        manifest: a corpus manifest (columns label, speaker, session).
        protocol: "loso", "session", "random" or "all".
        n_folds: number of folds for "random" (ignored otherwise).
        seed: seeds the random split and the validation sample.
        validation_fraction: share of each fold's training speakers (validation_split
            "speakers") or utterances ("utterances") held out for early stopping; 0 disables
            validation.
        validation_split: "auto", "speakers" or "utterances" (see the module docstring).

    Returns:
        list of Fold, in a fixed order (sorted speakers / sessions, k = 1..n).
    """
    if protocol not in PROTOCOLS:
        raise SerKerasError(f"train.protocol: '{protocol}' is not one of {', '.join(PROTOCOLS)}")
    if not 0.0 <= validation_fraction < 1.0:
        raise SerKerasError(f"train.validation_fraction: {validation_fraction} is not in [0, 1)")
    if validation_split not in VALIDATION_SPLITS:
        raise SerKerasError(
            f"train.validation_split: '{validation_split}' is not one of {', '.join(VALIDATION_SPLITS)}"
        )
    auto = validation_split == SPLIT_AUTO
    if auto:
        validation_split = SPLIT_UTTERANCES if protocol == PROTOCOL_RANDOM else SPLIT_SPEAKERS
    if len(manifest) == 0:
        raise SerKerasError("make_folds: the manifest is empty")
    labels = manifest["label"].astype(str).to_numpy()
    speakers = manifest["speaker"].astype(str).to_numpy()
    positions = np.arange(len(manifest))

    if protocol == PROTOCOL_LOSO:
        groups = speakers
        keys = sorted(set(groups))
        if len(keys) < 2:
            raise SerKerasError(
                f"train.protocol: loso needs at least 2 speakers, the corpus has {len(keys)}"
            )
        test_sets = [(f"speaker-{key}", positions[groups == key]) for key in keys]
    elif protocol == PROTOCOL_SESSION:
        sessions = manifest["session"]
        if sessions.isna().all():
            raise SerKerasError(
                "train.protocol: 'session' needs a corpus with sessions (IEMOCAP); this corpus has "
                "none: use loso or random"
            )
        if sessions.isna().any():
            raise SerKerasError(
                f"train.protocol: 'session': {int(sessions.isna().sum())} utterances have no session"
            )
        groups = sessions.astype(str).to_numpy()
        keys = sorted(set(groups))
        if len(keys) < 2:
            raise SerKerasError(f"train.protocol: session needs at least 2 sessions, found {keys}")
        test_sets = [(f"session-{key}", positions[groups == key]) for key in keys]
    elif protocol == PROTOCOL_ALL:
        test_sets = [(ALL_FOLD, np.empty(0, dtype=np.int64))]
    else:
        test_sets = _stratified_kfold(labels, n_folds, seed)

    folds = []
    for index, (name, test) in enumerate(test_sets):
        rest = np.setdiff1d(positions, test, assume_unique=True)
        genders = manifest["gender"].to_numpy() if "gender" in manifest else np.full(len(manifest), None)
        n_speakers = len(set(speakers[rest]))
        by_speakers = validation_split == SPLIT_SPEAKERS and n_speakers > 1
        if by_speakers and auto:
            by_speakers = n_speakers - _held_out_count(n_speakers, validation_fraction) >= MIN_TRAINING_SPEAKERS
        if by_speakers:
            validation = _validation_speakers(rest, speakers, genders, validation_fraction, seed, index)
        else:
            validation = _validation_sample(rest, labels, speakers, validation_fraction, seed, index)
        train = np.setdiff1d(rest, validation, assume_unique=True)
        folds.append(Fold(name, np.sort(train), np.sort(validation), np.sort(test)))
    return folds


def select_folds(folds: typing.Sequence[Fold], fold: typing.Optional[int]) -> typing.List[Fold]:
    """All folds, or the one at 0-based index `fold` (runtime.fold / --fold)."""
    if fold is None:
        return list(folds)
    if not 0 <= fold < len(folds):
        raise SerKerasError(f"runtime.fold: {fold} is out of range (this protocol has folds 0..{len(folds) - 1})")
    return [folds[fold]]


def _stratified_kfold(labels: np.ndarray, n_folds: int, seed: int) -> list:
    from sklearn.model_selection import StratifiedKFold

    if n_folds < 2:
        raise SerKerasError(f"train.folds: {n_folds} is below 2 (protocol random)")
    if len(labels) < n_folds:
        raise SerKerasError(f"train.folds: {n_folds} folds for only {len(labels)} utterances")
    # StratifiedKFold warns when a class has fewer members than folds; the split is still valid.
    import warnings

    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        parts = [test for _, test in splitter.split(np.zeros(len(labels)), labels)]
    return [(f"random-{k + 1}of{n_folds}", np.sort(test)) for k, test in enumerate(parts)]


def _held_out_count(n_speakers: int, fraction: float) -> int:
    """How many of `n_speakers` training speakers the ``speakers`` validation holds out."""
    if fraction <= 0:
        return 0
    return min(n_speakers - 1, max(1, int(round(fraction * n_speakers))))


def _validation_speakers(candidates: np.ndarray, speakers: np.ndarray, genders: np.ndarray,
                         fraction: float, seed: int, fold_index: int) -> np.ndarray:
    """All utterances of round(fraction * n) of the n training speakers (1 .. n - 1), chosen
    with a seeded shuffle, alternating genders where every candidate's gender is known."""
    if fraction <= 0:
        return np.empty(0, dtype=np.int64)
    names = sorted(set(speakers[candidates]))
    take = _held_out_count(len(names), fraction)
    rng = np.random.default_rng([int(seed), int(fold_index), 104729])
    order = [names[i] for i in rng.permutation(len(names))]
    gender_of = {}
    for i in candidates:
        gender_of.setdefault(speakers[i], genders[i])
    known = [g for g in gender_of.values() if isinstance(g, str) and g]
    if len(known) == len(names) and len(set(known)) > 1:
        groups = {g: [s for s in order if gender_of[s] == g] for g in sorted(set(known))}
        interleaved = []
        while any(groups.values()):
            for g in sorted(groups):
                if groups[g]:
                    interleaved.append(groups[g].pop(0))
        order = interleaved
    held_out = set(order[:take])
    return np.sort(np.array([i for i in candidates if speakers[i] in held_out], dtype=np.int64))


def _validation_sample(
    candidates: np.ndarray,
    labels: np.ndarray,
    speakers: np.ndarray,
    fraction: float,
    seed: int,
    fold_index: int,
) -> np.ndarray:
    """Per label, round(fraction * n) utterances (at least 1 when the label has >= 2 in
    training), taken round-robin over the training speakers so every speaker contributes."""
    if fraction <= 0 or len(candidates) < 2:
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(fold_index), 7919])
    chosen = []
    for label in sorted(set(labels[candidates])):
        members = candidates[labels[candidates] == label]
        if len(members) < 2:
            continue
        take = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        members = members[rng.permutation(len(members))]
        # Round-robin over speakers: rank of each utterance within its speaker, then by a
        # seeded speaker order, so the sample is spread over the training speakers.
        member_speakers = speakers[members]
        speaker_order = {s: i for i, s in enumerate(rng.permutation(sorted(set(member_speakers))))}
        rank = np.zeros(len(members), dtype=np.int64)
        seen: dict = {}
        for i, spk in enumerate(member_speakers):
            rank[i] = seen.get(spk, 0)
            seen[spk] = rank[i] + 1
        order = np.lexsort((np.array([speaker_order[s] for s in member_speakers]), rank))
        chosen.append(members[order[:take]])
    if not chosen:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)
