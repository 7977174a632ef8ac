"""A small synthetic emotional-speech corpus, so ``ser-keras fit --corpus demo`` runs anywhere.

The corpus is generated deterministically from ``data.demo_seed`` and written once, as 16 kHz
16-bit wav files in CASIA's layout ``<speaker>/<emotion>/<speaker>_<emotion>_<NN>.wav``, into
``<cache>/demo-v<GENERATOR_VERSION>-seed<seed>/`` (or into ``--data-dir`` / ``$SER_KERAS_DEMO``
when given). From there on it is read like any real corpus, through the same code path.
The folder is built in a temporary sibling and renamed into place, so an interrupted or
concurrent run never leaves a half-written corpus; the version in the folder name means a
changed generator never reuses stale files.

Voices are made by source-filter synthesis:

- source: a Rosenberg glottal pulse train (its derivative, which includes lip radiation)
  with per-period jitter and shimmer, plus pulse-synchronous breath noise, through a
  one-pole spectral-tilt filter;
- filter: five formant resonators per vowel (cascade, as second-order sections), the vowels
  of successive syllables cross-faded, the formants scaled per speaker (vocal tract length);
- prosody: syllables at a given rate with raised-cosine envelopes, word pauses, fricative
  bursts at some onsets, an F0 contour with declination, pitch accents and slow drift.

Emotion and speaker both shape pitch level and range, loudness, tempo, spectral tilt and voice
quality (open quotient, jitter, shimmer, breathiness); every utterance draws its own values
around the speaker's way of expressing each emotion, so classes overlap (as angry and happy,
or neutral and sad, do in real speech). Learnable, not trivial: with seed 0, 13 MFCC means and
logistic regression reach about 45 % under leave-one-speaker-out and 60 % on a stratified
random 5-fold split (chance 25 %); z-normalising each speaker's features lifts LOSO to about
57 %; exp1 (LLD functionals + RBF SVM) gets 43 % LOSO and 83 % on a random split.
``tests/test_corpora.py::test_demo_is_learnable_but_not_trivial`` keeps it in that band.

Size: 4 speakers (2 female, 2 male) x 4 emotions (neutral, happy, sad, angry) x 12 utterances
of 1.0-2.5 s: 192 files, about 5.6 minutes of audio, generated in about 2 s.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import shutil
import tempfile
import typing

import numpy as np
from scipy import ndimage, signal

from ser_keras.config import cache_root
from ser_keras.errors import SerKerasError

NAME = "demo"
ENV_VAR = "SER_KERAS_DEMO"
LAYOUT = "<speaker>/<emotion>/<speaker>_<emotion>_<NN>.wav (generated)"
# Bump whenever the generated audio changes: the cache folder name carries it.
GENERATOR_VERSION = 2
SAMPLE_RATE = 16000
UTTERANCES_PER_CLASS = 12
DURATION_RANGE_S = (1.0, 2.5)
MARKER = "demo_corpus.json"


class Speaker(typing.NamedTuple):
    name: str
    gender: str
    f0_hz: float  # base pitch
    formant_scale: float  # shorter vocal tract -> higher formants
    tilt: float  # added to the emotion's tilt coefficient (darker voice > 0)
    breath: float  # base breath-noise level
    rate: float  # speaking-rate factor
    level_db: float  # recording level


class Emotion(typing.NamedTuple):
    name: str
    f0_st: float  # pitch level, semitones from the speaker's base
    range_st: float  # pitch-accent size, semitones
    level_db: float  # loudness
    rate: float  # syllables per second
    tilt: float  # one-pole low-pass coefficient of the source: higher is darker
    open_quotient: float  # low = pressed/tense, high = breathy/lax
    jitter: float  # relative per-period F0 perturbation
    shimmer: float  # relative per-period amplitude perturbation
    breath: float  # breath-noise multiplier
    f1_scale: float  # mouth opening
    pause: float  # probability of a word pause after a syllable


SPEAKERS = (
    Speaker("spk_f1", "female", 215.0, 1.17, 0.00, 0.05, 1.05, 0.0),
    Speaker("spk_f2", "female", 185.0, 1.12, 0.06, 0.08, 0.93, -3.0),
    Speaker("spk_m1", "male", 122.0, 1.00, -0.04, 0.04, 1.00, 2.0),
    Speaker("spk_m2", "male", 100.0, 0.94, 0.03, 0.06, 1.10, -1.0),
)
EMOTIONS = (
    Emotion("neutral", 0.0, 2.5, 0.0, 4.2, 0.66, 0.60, 0.008, 0.04, 1.0, 1.00, 0.25),
    Emotion("happy", 2.5, 5.5, 2.5, 4.9, 0.50, 0.58, 0.009, 0.05, 0.9, 1.06, 0.20),
    Emotion("sad", -1.5, 1.5, -4.5, 3.3, 0.84, 0.70, 0.013, 0.06, 1.7, 0.95, 0.40),
    Emotion("angry", 3.5, 4.0, 6.5, 5.1, 0.32, 0.42, 0.014, 0.07, 0.7, 1.10, 0.15),
)
# Male vowel formants (Hz), roughly Peterson & Barney, and bandwidths.
VOWELS = np.array([
    [730, 1090, 2440, 3400, 4500],  # a
    [270, 2290, 3010, 3700, 4600],  # i
    [300, 870, 2240, 3300, 4400],  # u
    [530, 1840, 2480, 3500, 4500],  # e
    [570, 840, 2410, 3400, 4400],  # o
], dtype=np.float64)
BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0, 260.0])


def speakers() -> dict:
    return {s.name: s for s in SPEAKERS}


# --- loader contract ---------------------------------------------------------------------


def prepare(root: typing.Optional[pathlib.Path], config, cache_dir: typing.Optional[str] = None) -> pathlib.Path:
    """Generate the corpus (once) and return its folder (by default under the cache root)."""
    seed = int(getattr(config, "demo_seed", 0))
    if root is None:
        root = cache_root(cache_dir) / f"demo-v{GENERATOR_VERSION}-seed{seed}"
    ensure_corpus(pathlib.Path(root), seed)
    return pathlib.Path(root)


def scan(root: pathlib.Path, config) -> list:
    genders = {s.name: s.gender for s in SPEAKERS}
    labels = {e.name for e in EMOTIONS}
    rows = []
    for wav in sorted(root.glob("*/*/*.wav")):
        speaker, emotion = wav.parent.parent.name, wav.parent.name
        if speaker in genders and emotion in labels:
            rows.append({"path": wav, "label": emotion, "speaker": speaker, "gender": genders[speaker]})
    return rows


# --- generation on disk ------------------------------------------------------------------


def _marker(seed: int) -> dict:
    return {"corpus": NAME, "generator_version": GENERATOR_VERSION, "seed": seed, "sample_rate": SAMPLE_RATE,
            "files": len(SPEAKERS) * len(EMOTIONS) * UTTERANCES_PER_CLASS}


def _is_complete(root: pathlib.Path, seed: int) -> bool:
    try:
        return json.loads((root / MARKER).read_text()) == _marker(seed)
    except (OSError, ValueError):
        return False


def ensure_corpus(root: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Make `root` hold the demo corpus for `seed`; a no-op when it already does.

    A folder holding another version or seed of the demo corpus is replaced; any other
    non-empty folder is left alone and reported, so a mistyped --data-dir never loses data.
    """
    if _is_complete(root, seed):
        return root
    if root.exists() and not root.is_dir():
        raise SerKerasError(f"{root}: is a file; the demo corpus needs a directory")
    stale = root.is_dir() and (root / MARKER).is_file()
    if root.is_dir() and not stale and any(root.iterdir()):
        raise SerKerasError(
            f"{root}: not empty and not a demo corpus; give the demo corpus a new or empty directory"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    building = pathlib.Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    aside = None
    try:
        generate(building, seed)
        (building / MARKER).write_text(json.dumps(_marker(seed), indent=1) + "\n")
        if root.is_dir():
            if _is_complete(root, seed):  # another process finished first
                return root
            aside = pathlib.Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, aside / "corpus")
        try:
            os.rename(building, root)
        except OSError:
            if not _is_complete(root, seed):
                raise
    except OSError as exc:
        raise SerKerasError(f"{root}: cannot write the demo corpus ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    return root


def generate(out_dir: pathlib.Path, seed: int = 0) -> list:
    """Write every utterance under `out_dir` (no atomicity: see ensure_corpus)."""
    import soundfile

    paths = []
    for s_index, speaker in enumerate(SPEAKERS):
        for e_index, emotion in enumerate(EMOTIONS):
            style = _speaker_style(seed, s_index, e_index)
            folder = out_dir / speaker.name / emotion.name
            folder.mkdir(parents=True, exist_ok=True)
            for u_index in range(UTTERANCES_PER_CLASS):
                rng = np.random.default_rng([seed, s_index, e_index, u_index, 1])
                waveform = synthesize(rng, speaker, emotion, style)
                path = folder / f"{speaker.name}_{emotion.name}_{u_index:02d}.wav"
                soundfile.write(str(path), waveform, SAMPLE_RATE, subtype="PCM_16")
                paths.append(path)
    return paths


# --- synthesis ---------------------------------------------------------------------------


def _speaker_style(seed: int, s_index: int, e_index: int) -> dict:
    """How this speaker expresses this emotion: fixed offsets around the emotion's means.

    These interaction terms are what makes leave-one-speaker-out harder than a random split,
    as in real corpora.
    """
    rng = np.random.default_rng([seed, s_index, e_index, 0])
    return {
        "f0_st": rng.normal(0.0, 0.6),
        "range": np.exp(rng.normal(0.0, 0.15)),
        "level_db": rng.normal(0.0, 0.8),
        "rate": np.exp(rng.normal(0.0, 0.08)),
        "tilt": rng.normal(0.0, 0.03),
        "open_quotient": rng.normal(0.0, 0.03),
    }


def synthesize(rng: np.random.Generator, speaker: Speaker, emotion: Emotion, style: dict,
               sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One utterance as float32 in [-1, 1]."""
    sr = sample_rate
    # Per-utterance draws around the speaker's style of the emotion: deliberately wide.
    f0_st = emotion.f0_st + style["f0_st"] + rng.normal(0.0, 1.0)
    range_st = emotion.range_st * style["range"] * np.exp(rng.normal(0.0, 0.25))
    level_db = emotion.level_db + speaker.level_db + style["level_db"] + rng.normal(0.0, 1.5)
    rate = emotion.rate * speaker.rate * style["rate"] * np.exp(rng.normal(0.0, 0.12))
    tilt = np.clip(emotion.tilt + speaker.tilt + style["tilt"] + rng.normal(0.0, 0.05), 0.05, 0.95)
    open_quotient = np.clip(emotion.open_quotient + style["open_quotient"] + rng.normal(0.0, 0.05), 0.3, 0.85)
    jitter = emotion.jitter * np.exp(rng.normal(0.0, 0.3))
    shimmer = emotion.shimmer * np.exp(rng.normal(0.0, 0.3))
    breath = speaker.breath * emotion.breath * np.exp(rng.normal(0.0, 0.3))
    f1_scale = emotion.f1_scale * np.exp(rng.normal(0.0, 0.03))

    duration = rng.uniform(*DURATION_RANGE_S)
    n = int(round(duration * sr))
    syllables = _syllables(rng, duration, rate, emotion.pause)

    # F0 contour on a 5 ms grid: declination + accents + drift, then per-period jitter.
    grid = np.arange(0.0, duration + 0.005, 0.005)
    contour = np.linspace(1.0, -1.0, grid.size) * rng.uniform(0.5, 1.5)
    for onset, offset, _vowel, _stress, accent in syllables:
        centre, width = (onset + offset) / 2, max((offset - onset) / 2.5, 0.02)
        contour += accent * range_st * np.exp(-0.5 * ((grid - centre) / width) ** 2)
    drift = signal.lfilter([0.05], [1.0, -0.95], rng.normal(0.0, 1.0, grid.size))
    contour += 0.6 * drift / (np.std(drift) + 1e-9)
    f0 = speaker.f0_hz * 2.0 ** ((f0_st + contour) / 12.0)
    f0 = np.interp(np.arange(n) / sr, grid, f0)
    periods = int(np.ceil(f0.sum() / sr)) + 2
    f0 = f0 * (1.0 + jitter * rng.normal(0.0, 1.0, periods)[np.floor(np.cumsum(f0) / sr).astype(int)])
    phase = np.cumsum(f0) / sr
    period = np.floor(phase).astype(int)
    frac = phase - period

    # Rosenberg glottal flow; its derivative is the excitation (flow + lip radiation).
    opening, closing = 0.6 * open_quotient, 0.4 * open_quotient
    flow = np.where(frac < opening, 0.5 * (1.0 - np.cos(np.pi * frac / opening)),
                    np.where(frac < opening + closing,
                             np.cos(0.5 * np.pi * (frac - opening) / closing), 0.0))
    amplitude = 1.0 + shimmer * rng.normal(0.0, 1.0, period.max() + 1)[period]
    source = np.diff(flow, prepend=0.0) * amplitude * (sr / 100.0 / f0)
    noise = np.diff(rng.normal(0.0, 1.0, n), prepend=0.0)
    source = source + breath * noise * (0.3 + 0.7 * flow)
    source = signal.lfilter([1.0 - tilt], [1.0, -tilt], source)

    # Vocal tract: each vowel's formant cascade over the whole source, cross-faded by syllable.
    weights = np.zeros((len(VOWELS), n))
    vowel_at = np.full(n, syllables[0][2])
    for onset, _offset, vowel, _stress, _accent in syllables:
        vowel_at[int(onset * sr):] = vowel
    weights[vowel_at, np.arange(n)] = 1.0
    # A 40 ms moving average turns the one-hot vowel track into linear cross-fades.
    weights = ndimage.uniform_filter1d(weights, int(0.04 * sr), axis=1, mode="nearest")
    scale = speaker.formant_scale * np.exp(rng.normal(0.0, 0.02))
    voiced = np.zeros(n)
    for vowel in np.unique(vowel_at):
        formants = VOWELS[vowel] * scale
        formants[0] *= f1_scale
        voiced += weights[vowel] * signal.sosfilt(_resonators(formants, BANDWIDTHS, sr), source)

    # Syllable envelopes, fricative bursts at some onsets, a low noise floor.
    envelope = np.zeros(n)
    fricative = np.zeros(n)
    for onset, offset, _vowel, stress, _accent in syllables:
        start, stop = int(onset * sr), min(int(offset * sr), n)
        envelope[start:stop] += stress * signal.windows.tukey(stop - start, 0.6)
        if rng.random() < 0.6:
            length = int(rng.uniform(0.03, 0.08) * sr)
            begin = max(start - length // 2, 0)
            fricative[begin:begin + length] += rng.uniform(0.1, 0.3) * np.hanning(length)[: n - begin]
    speech = voiced * envelope
    active = envelope > 0.1
    speech /= np.sqrt(np.mean(speech[active] ** 2)) + 1e-12
    band = _FRICATIVE_BANDS[int(rng.integers(len(_FRICATIVE_BANDS)))]
    hiss = signal.sosfilt(_bandpass(band, sr), rng.normal(0.0, 1.0, n))
    speech += fricative * hiss / (np.std(hiss) + 1e-12)
    gain = 10.0 ** ((level_db - 28.0) / 20.0)
    waveform = gain * speech + 10.0 ** (-62.0 / 20.0) * rng.normal(0.0, 1.0, n)
    peak = np.max(np.abs(waveform))
    if peak > 0.95:  # keep loud voices loud but unclipped
        waveform *= 0.95 / peak
    return waveform.astype(np.float32)


def _syllables(rng, duration: float, rate: float, pause: float) -> list:
    """(onset s, offset s, vowel index, stress, accent) per syllable."""
    out = []
    t = rng.uniform(0.05, 0.15)
    end = duration - rng.uniform(0.05, 0.15)
    while True:
        length = rng.uniform(0.65, 1.25) / rate
        if t + 0.8 * length > end and out:
            break
        nucleus = 0.8 * length
        stressed = rng.random() < 0.35
        stress = 1.0 if stressed else rng.uniform(0.45, 0.85)
        accent = rng.uniform(0.5, 1.0) if stressed else rng.uniform(-0.1, 0.3)
        out.append((t, min(t + nucleus, end), int(rng.integers(len(VOWELS))), stress, accent))
        t += length
        if rng.random() < pause:
            t += rng.uniform(0.08, 0.25)
    return out


_FRICATIVE_BANDS = ((2500.0, 4500.0), (4000.0, 7000.0))  # sh-like, s-like


@functools.lru_cache(maxsize=None)
def _bandpass(band: tuple, sr: int) -> np.ndarray:
    return signal.butter(4, band, btype="bandpass", fs=sr, output="sos")


def _resonators(formants, bandwidths, sr: int) -> np.ndarray:
    """Second-order sections of a cascade of unit-DC-gain formant resonators."""
    r = np.exp(-np.pi * bandwidths / sr)
    theta = 2.0 * np.pi * np.minimum(formants, 0.45 * sr) / sr
    a1, a2 = -2.0 * r * np.cos(theta), r * r
    sos = np.zeros((len(formants), 6))
    sos[:, 0] = 1.0 + a1 + a2
    sos[:, 3], sos[:, 4], sos[:, 5] = 1.0, a1, a2
    return sos
