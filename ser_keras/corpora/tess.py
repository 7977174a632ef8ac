"""Toronto Emotional Speech Set: ``{OAF,YAF}_<emotion>/<SPK>_<word>_<emotion>.wav``.

Two female speakers (OAF older, YAF younger) say 200 words in 7 emotions. The distributor's
folder names are not uniform (``OAF_Fear``, ``OAF_Pleasant_surprise``, ``YAF_pleasant_surprised``,
files ``..._ps.wav``), so emotions are normalised to angry, disgust, fear, happy, neutral,
pleasant_surprise, sad. The folder names the emotion; the file name is the fallback. A file
whose name does not follow the naming (``OAF_neutral/OA_bite_neutral.wav`` in the distributed
set) takes speaker and emotion from its folder and is reported (``load_manifest``). The root
may also be one level above the emotion folders (e.g. ``TESS Toronto emotional speech set data/``).
"""

from __future__ import annotations

import pathlib

NAME = "tess"
ENV_VAR = "SER_KERAS_TESS"
LAYOUT = "{OAF,YAF}_<emotion>/<OAF|YAF>_<word>_<emotion>.wav"
SPEAKERS = ("OAF", "YAF")
EMOTIONS = {
    "angry": "angry", "anger": "angry",
    "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear",
    "happy": "happy", "happiness": "happy",
    "neutral": "neutral",
    "ps": "pleasant_surprise", "pleasant_surprise": "pleasant_surprise",
    "pleasant_surprised": "pleasant_surprise", "surprise": "pleasant_surprise",
    "surprised": "pleasant_surprise",
    "sad": "sad", "sadness": "sad",
}


def _emotion(text: str):
    return EMOTIONS.get(text.strip().lower().replace(" ", "_"))


def _row(wav: pathlib.Path):
    if wav.name.startswith("."):
        return None
    folder_speaker, _, folder_emotion = wav.parent.name.partition("_")
    folder_speaker = folder_speaker.upper() if folder_speaker.upper() in SPEAKERS else None
    folder_emotion = _emotion(folder_emotion) if folder_speaker else None
    parts = wav.stem.split("_")
    name_speaker = parts[0].upper() if len(parts) >= 3 and parts[0].upper() in SPEAKERS else None
    name_emotion = _emotion("_".join(parts[2:])) if name_speaker else None
    if name_speaker and (folder_emotion or name_emotion):
        if folder_speaker and folder_speaker != name_speaker:
            return {"path": wav, "skip": f"named for speaker {name_speaker} in the {folder_speaker} folder"}
        return {"path": wav, "label": folder_emotion or name_emotion, "speaker": name_speaker, "gender": "female"}
    if folder_speaker and folder_emotion:
        # e.g. OAF_neutral/OA_bite_neutral.wav: the folder says who and how, unambiguously.
        return {"path": wav, "label": folder_emotion, "speaker": folder_speaker, "gender": "female",
                "note": "name not <OAF|YAF>_<word>_<emotion>.wav; speaker and emotion from its folder"}
    if folder_speaker or name_speaker:
        return {"path": wav, "skip": "no emotion in its folder or name"}
    return None  # not in a TESS folder: a stray file


def scan(root: pathlib.Path, config) -> list:
    for pattern in ("*/*.wav", "*/*/*.wav"):
        rows, seen = [], set()
        for wav in sorted(root.glob(pattern)):
            row = _row(wav)
            # Some copies hold the set twice (a nested duplicate folder): keep one per name.
            if row is None or wav.name.lower() in seen:
                continue
            if "skip" not in row:
                seen.add(wav.name.lower())
            rows.append(row)
        if any("skip" not in row for row in rows):
            return rows
    return []
