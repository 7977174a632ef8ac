"""CASIA Chinese emotional speech (public part): ``<speaker>/<emotion>/<id>.wav``."""

from __future__ import annotations

import pathlib

NAME = "casia"
ENV_VAR = "SER_KERAS_CASIA"
LAYOUT = "<speaker>/<emotion>/<id>.wav with emotions angry fear happy neutral sad surprise"
EMOTIONS = ("angry", "fear", "happy", "neutral", "sad", "surprise")
# The distributor's speakers, for gender; unknown speakers simply get no gender.
GENDERS = {"liuchanhg": "female", "wangzhe": "male", "zhaoquanyin": "female", "zhaozuoxiang": "male"}


def scan(root: pathlib.Path, config) -> list:
    rows = []
    for wav in sorted(root.glob("*/*/*.wav")):
        speaker, emotion = wav.parent.parent.name, wav.parent.name.lower()
        if emotion not in EMOTIONS:
            rows.append({"path": wav,
                         "skip": f"emotion folder '{wav.parent.name}' is not one of {', '.join(EMOTIONS)}"})
            continue
        rows.append({"path": wav, "label": emotion, "speaker": speaker, "gender": GENDERS.get(speaker.lower())})
    # Audio one level too high (<speaker>/<id>.wav): no emotion folder, so no label.
    for wav in sorted(root.glob("*/*.wav")):
        rows.append({"path": wav, "skip": "not inside an <emotion> folder"})
    return rows
