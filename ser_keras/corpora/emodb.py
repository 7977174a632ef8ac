"""Berlin EMO-DB: ``wav/<spk><text><emotion><version>.wav`` (e.g. ``03a01Fa.wav``)."""

from __future__ import annotations

import pathlib
import re

NAME = "emodb"
ENV_VAR = "SER_KERAS_EMODB"
LAYOUT = "wav/<spk 2 digits><text a01..b10><emotion letter WLEAFTN><version>.wav"
EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness", "N": "neutral"}
# Speaker sex as documented by the distributor.
GENDERS = {"03": "male", "08": "female", "09": "female", "10": "male", "11": "male",
           "12": "male", "13": "female", "14": "female", "15": "male", "16": "female"}
PATTERN = re.compile(r"^(\d\d)([ab]\d\d)([WLEAFTN])([a-z])\.wav$")


def scan(root: pathlib.Path, config) -> list:
    folder = root / "wav" if (root / "wav").is_dir() else root
    rows = []
    for wav in sorted(folder.glob("*.wav")):
        match = PATTERN.match(wav.name)
        if not match:
            rows.append({"path": wav, "skip": "name not <spk><text><emotion letter><version>.wav"})
            continue
        speaker, _text, letter, _version = match.groups()
        rows.append({"path": wav, "label": EMOTIONS[letter], "speaker": speaker, "gender": GENDERS.get(speaker)})
    return rows
