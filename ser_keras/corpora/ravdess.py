"""RAVDESS: ``Actor_XX/MM-VV-EE-II-SS-RR-AA.wav`` (e.g. ``Actor_12/03-01-05-02-01-01-12.wav``).

The seven fields are modality (03 audio-only), vocal channel (01 speech, 02 song), emotion,
intensity, statement, repetition and actor. Speech only by default; ``data.ravdess_song``
adds the sung files. The root may hold the ``Actor_*`` folders directly (the speech zip) or
the distributor's ``Audio_Speech_Actors_01-24`` / ``Audio_Song_Actors_01-24`` folders.
Odd actors are male, even actors female.
"""

from __future__ import annotations

import pathlib
import re

NAME = "ravdess"
ENV_VAR = "SER_KERAS_RAVDESS"
LAYOUT = "Actor_01..24/03-01-<emotion 01..08>-<intensity>-<statement>-<repetition>-<actor>.wav"
EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad",
            "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised"}
PATTERN = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.wav$")
SPEECH, SONG = "01", "02"
AUDIO_ONLY = "03"


def scan(root: pathlib.Path, config) -> list:
    channels = {SPEECH, SONG} if getattr(config, "ravdess_song", False) else {SPEECH}
    wavs = sorted(set(root.glob("Actor_*/*.wav")) | set(root.glob("*/Actor_*/*.wav")))
    rows, seen = [], set()
    for wav in wavs:
        match = PATTERN.match(wav.name)
        if not match:
            rows.append({"path": wav, "skip": "name not MM-VV-EE-II-SS-RR-AA.wav"})
            continue
        modality, channel, emotion, _intensity, _statement, _repetition, actor = match.groups()
        if channel == SONG and channel not in channels:
            continue  # song, left out by choice (data.ravdess_song)
        if modality != AUDIO_ONLY or channel not in (SPEECH, SONG) or emotion not in EMOTIONS:
            rows.append({"path": wav, "skip": f"modality {modality}, channel {channel}, emotion {emotion}: "
                                              "not an audio-only speech/song recording of a known emotion"})
            continue
        # The same file may sit in two copies of the tree (e.g. an unpacked zip next to
        # the merged folders); the file name identifies the recording.
        if wav.name in seen:
            continue
        seen.add(wav.name)
        rows.append({
            "path": wav,
            "label": EMOTIONS[emotion],
            "speaker": f"Actor_{actor}",
            "gender": "male" if int(actor) % 2 else "female",
        })
    return rows
