"""Label audio files with a trained run or an export: ``ser-keras predict MODEL PATH...``.

``MODEL`` is a run directory (``ser-keras fit``; the fold's ``model.keras`` runs in-process
after the front end's ops) or an export directory (``ser-keras export``; the SavedModel is
loaded with ``tf.saved_model.load`` and its ``serve`` endpoint does the front end). Both give
the same numbers (see tests/test_export_parity.py).

Per file:

- the audio is read by ``ser_keras.audio.load_audio``: any rate (resampled to the model's),
  any channel count (mixed to mono), WAV/FLAC/OGG/AIFF (also AIFF data in a ``.wav`` file);
- recordings longer than the training length (``features.max_frames`` frames, 8 s by
  default) are scored in sliding windows of that length, overlapping by half (the hop is
  rounded down to whole attention steps so all windows share one step grid); the last window
  ends at the end of the recording and is at least half a window long. Each window gives a
  label and probabilities (the ``windows`` timeline); the utterance result is the mean of the
  windows' probabilities weighted by their frame counts. A recording no longer than one window
  is one window;
- ``attention``: one weight per attention step of ``step_s`` seconds (step ``k`` starts at
  ``k * step_s`` and covers ``span_s`` seconds of audio). With several windows, a step's weight
  is the mean, over the windows that contain it, of its weight relative to uniform in that
  window (``alpha * steps``), and the result is normalised to sum to 1 over the recording; with
  one window it is exactly the model's alpha. Models without attention (exp2, exp3) report
  uniform weights;
- a recording shorter than one 20 ms frame is zero-padded to one frame (a defined result, with
  a warning);
- ``speech``: whether the recording holds speech (``features.level``: long enough,
  loud enough, and with the level contrast of syllables and pauses; the thresholds are the
  run's ``features.speech_*``), decided per window as the export's ``speech`` output decides it
  per row. A window without speech gets uniform probabilities and no label (as the export's
  endpoints give it); the recording's probabilities are pooled over its windows with speech,
  and a recording with none has ``"speech": false``, ``"label": null``, uniform probabilities
  (the text output says "no speech").

Normalisation (see ``docs/export_endpoints.md``): by default every file is a recording on its own, with
no speaker context, normalised as the export's ``serve`` does (``serve_without_speaker``: the
statistics pooled over the training speakers); for a speaker-normalised model ``fit``'s
``results.json["serving"]`` is the figure that applies. With ``same_speaker=True``
(``ser-keras predict --same-speaker``) all files are taken as recordings of ONE speaker: the
statistics of all of their frames normalise every file (all windows of a long one too), as
``fit`` normalises a test speaker and the export's ``serve_speaker`` does, so ``fit``'s protocol
figure (``results.json["pooled"]``) applies — given enough of the speaker's speech (about ten
recordings; with one to three, the default is better). The report's ``normalization`` says
which was used.

A file that cannot be used (missing, empty, corrupt, not audio, NaN samples) is reported with
its one-line error and never stops the others. ``run_predict_command`` returns 0 when at least
one file was scored (bad files are still reported, on stderr and in the JSON ``errors``), 1
when none was — so a script can tell "nothing worked" from "some inputs were bad" by
checking ``errors`` in the JSON.
"""

from __future__ import annotations

import json
import pathlib
import sys
import typing

import numpy as np

from ser_keras.audio import AUDIO_SUFFIXES, load_audio
from ser_keras.errors import SerKerasError
from ser_keras.inference.plot import plot_results
from ser_keras.inference.predictors import ExportPredictor, Predictor, RunPredictor
from ser_keras.rundir import SAVED_MODEL_FILE, RunDir

EXIT_OK = 0
# Nothing could be scored: every input was bad (missing, empty, corrupt) — an error the user
# can fix, so the status of every other fixable error (cli.EXIT_USER_ERROR).
EXIT_NOTHING_SCORED = 2
MAX_BATCH = 32


# ------------------------------------------------------------------------------ files


def load_predictor(model, fold=None, runtime: str = "savedmodel") -> Predictor:
    """A ``Predictor`` for a run directory or an export directory (or one already made);
    ``runtime="litert"`` or a ``.tflite`` file: the export's LiteRT model (``inference.litert_predict``)."""
    if isinstance(model, Predictor):
        return model
    path = pathlib.Path(model)
    if runtime == "litert" or path.suffix == ".tflite":
        from ser_keras.inference.litert_predict import LiteRTPredictor

        return LiteRTPredictor(path)
    if not path.is_dir():
        raise SerKerasError(f"{path}: no such model directory (give a run or export directory)")
    if (path / SAVED_MODEL_FILE).is_file():
        if fold is not None:
            raise SerKerasError(f"{path}: --fold selects a fold of a run directory; this is an export "
                                "(it holds one fold already)")
        return ExportPredictor(path)
    if RunDir(path).is_run():
        return RunPredictor(path, fold)
    raise SerKerasError(f"{path}: neither a run directory (config.yaml + folds/) nor an export "
                        "(saved_model.pb)")


def find_audio_files(paths: typing.Sequence) -> tuple:
    """(files, errors): named files as they are, directories searched recursively for
    audio suffixes (``AUDIO_SUFFIXES``, any case); errors for missing paths and empty dirs."""
    files, errors, seen = [], [], set()
    for entry in paths:
        path = pathlib.Path(entry)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                errors.append({"path": str(path), "error": f"{path}: no audio files "
                               f"({', '.join(AUDIO_SUFFIXES)}) in this directory"})
            candidates = found
        elif path.exists():
            candidates = [path]
        else:
            errors.append({"path": str(path), "error": f"{path}: no such file or directory"})
            candidates = []
        for p in candidates:
            key = str(p.resolve())
            if key not in seen:
                seen.add(key)
                files.append(p)
    return files, errors


# ------------------------------------------------------------------------------ windows


def window_starts(n_frames: int, window: typing.Optional[int], step: int) -> list:
    """[(start_frame, frames)] of the sliding windows over `n_frames` frames (see module doc)."""
    if window is None or n_frames <= window:
        return [(0, n_frames)]
    hop = max(step, (window // 2) // step * step)
    out, start = [], 0
    while True:
        out.append((start, min(window, n_frames - start)))
        if start + window >= n_frames:
            return out
        start += hop


def _round(x, digits: int = 6):
    return float(round(float(x), digits))


def score_waveform(predictor: Predictor, waveform: np.ndarray, window_frames="default", stats=None) -> dict:
    """Result dict (label, probabilities, windows, attention, ...) of one mono waveform at the
    predictor's sample rate (no ``path``).

    `stats`: (mean, std) to normalise every window with (the speaker's); None: the predictor's
    own normalisation (pooled statistics).
    """
    waveform = np.asarray(waveform, np.float32)
    sr = predictor.sample_rate
    window = predictor.window_frames if window_frames == "default" else window_frames
    if window is not None:
        window = max(int(window), predictor.span_frames, 1)
    n_frames = predictor.frame_count(waveform.shape[0])
    windows = window_starts(n_frames, window, predictor.step_frames)
    # Group equal-length windows into batches (all but maybe the last are full windows).
    outputs = [None] * len(windows)
    cuts = [predictor.cut(waveform, start, length) for start, length in windows]
    speech = [predictor.has_speech(cut) for cut in cuts]
    by_length: dict = {}
    for i, (_, length) in enumerate(windows):
        by_length.setdefault((length, len(cuts[i])), []).append(i)
    for (length, _), indices in by_length.items():
        for chunk in range(0, len(indices), MAX_BATCH):
            part = indices[chunk:chunk + MAX_BATCH]
            batch = np.stack([cuts[i] for i in part])
            if batch.shape[1] < predictor.frame:
                batch = np.pad(batch, [(0, 0), (0, predictor.frame - batch.shape[1])])
            probs, alpha = predictor.score(batch, stats)
            for row, i in enumerate(part):
                # No speech, no emotion (the export's endpoints give the same; a run's model
                # and exports made before the speech output do not).
                p = probs[row] if speech[i] else np.full(len(predictor.labels), 1.0 / len(predictor.labels))
                outputs[i] = (p, alpha[row, :predictor.steps(length)])

    labels = predictor.labels
    hop_s, frame_s = predictor.hop / sr, predictor.frame / sr
    duration = waveform.shape[0] / sr
    # Pooled over the windows with speech (all of them when none has: uniform).
    weights = np.array([length for _, length in windows], np.float64) * (np.array(speech) if any(speech) else 1)
    pooled = sum(w * p.astype(np.float64) for w, (p, _) in zip(weights, outputs)) / weights.sum()
    step, span = predictor.step_frames, predictor.span_frames
    total_steps = max(start // step + len(a) for (start, _), (_, a) in zip(windows, outputs))
    acc, cover = np.zeros(total_steps), np.zeros(total_steps)
    for (start, _), (_, alpha) in zip(windows, outputs):
        first = start // step
        # Relative to uniform (alpha * steps), so windows of different lengths weigh alike.
        acc[first:first + len(alpha)] += alpha * len(alpha)
        cover[first:first + len(alpha)] += 1
    attention = np.where(cover > 0, acc / np.maximum(cover, 1), 0.0)
    if attention.sum() > 0:
        attention = attention / attention.sum()

    def end_of(first_frame, frames):
        return min(duration, (first_frame + frames - 1) * hop_s + frame_s) if duration > frame_s else duration

    result = {
        "label": labels[int(np.argmax(pooled))] if any(speech) else None,
        "speech": bool(any(speech)),
        "probabilities": {name: _round(v) for name, v in zip(labels, pooled)},
        "duration_s": _round(duration, 4),
        "windows": [
            {"start_s": _round(start * hop_s, 4), "end_s": _round(end_of(start, length), 4),
             "label": labels[int(np.argmax(p))] if has else None, "speech": bool(has),
             "probabilities": {name: _round(v) for name, v in zip(labels, p)}}
            for (start, length), (p, _), has in zip(windows, outputs, speech)
        ],
        "attention": {
            "step_s": _round(step * hop_s, 6),
            "span_s": _round((span - 1) * hop_s + frame_s, 6),
            "start_s": [_round(k * step * hop_s, 4) for k in range(total_steps)],
            "weights": [_round(v) for v in attention],
        },
        "warnings": [],
    }
    if waveform.shape[0] < predictor.frame:
        result["warnings"].append(f"shorter than one frame ({waveform.shape[0]} samples < {predictor.frame}): "
                                  "zero-padded to one frame")
    if not np.any(waveform):
        result["warnings"].append("silent (all samples are zero)")
    if not any(speech):
        result["warnings"].append("no speech: probabilities are uniform")
    return result


def predict_files(model, paths: typing.Sequence, fold=None, window_frames="default",
                  progress: bool = False, same_speaker: bool = False) -> dict:
    """Label every audio file under `paths` with `model` (run dir, export dir or Predictor).

    Args:
        model: a run directory, an export directory, or a ``Predictor`` (``load_predictor``).
        paths: audio files and/or directories (searched recursively for audio suffixes).
        fold: the fold of a run directory (position or name; default: the first).
        window_frames: sliding-window length in frames; "default" is the training length
            (``features.max_frames``), None scores every recording in one piece.
        progress: print one line per file to stderr.
        same_speaker: all files are recordings of one speaker: normalise them all with the
            statistics of all of their frames (as ``fit`` does a test speaker); files that
            cannot be read are left out of the statistics (and reported).

    Returns:
        ``{"model": str, "labels": [...], "sample_rate": int, "normalization": str,
        "results": [...], "errors": [{"path", "error"}]}``; ``normalization`` is "speaker"
        (``same_speaker`` with a speaker-normalised model), else how a single recording is
        normalised ("pooled", or "none"). Each result has ``path``, ``label``,
        ``probabilities`` (label -> p), ``duration_s``, ``windows`` (``start_s``, ``end_s``,
        ``label``, ``probabilities``), ``attention`` (``step_s``, ``span_s``, ``start_s``,
        ``weights``) and ``warnings``.
    """
    predictor = load_predictor(model, fold)
    files, errors = find_audio_files(paths)

    def loaded():  # (path, waveform) per usable file, one at a time
        for path in files:
            waveform = _guarded(path, errors, lambda: load_audio(path, predictor.sample_rate))
            if waveform is not None:
                yield path, waveform

    inputs, stats, normalization = loaded(), None, predictor.normalization
    if same_speaker and predictor.speaker_adapted:
        predictor.require_statistics()
        inputs, moments, functionals = [], [], []  # two passes: every file is held in memory
        for path, waveform in loaded():
            inputs.append((path, waveform))
            if not predictor.has_speech(waveform):
                continue  # silence or noise says nothing about the speaker (serve_speaker agrees)
            value = _guarded(path, errors, lambda: predictor.moments(waveform))
            if value is not None and predictor.fuses_functionals:
                # The functionals classifier's speaker statistics: over whole recordings, as fit's.
                row = _guarded(path, errors, lambda: predictor.functionals(waveform))
                value = None if row is None else value
                if row is not None:
                    functionals.append(row)
            if value is not None:
                moments.append(value)
            else:
                inputs.pop()
        if moments:
            stats = predictor.statistics(moments, functionals if predictor.fuses_functionals else None)
            normalization = "speaker"
    results = []
    for path, waveform in inputs:
        result = _guarded(path, errors, lambda: {
            "path": str(path), **score_waveform(predictor, waveform, window_frames, stats)})
        if result is None:
            continue
        results.append(result)
        if progress:
            print(f"{path}: {result['label']}", file=sys.stderr)
    return {"model": predictor.source, "labels": list(predictor.labels), "sample_rate": predictor.sample_rate,
            "normalization": normalization, "results": results, "errors": errors}


def _guarded(path, errors: list, work):
    """``work()``, or None with the one-line error appended to `errors`: one bad file must never
    lose the others."""
    try:
        return work()
    except SerKerasError as exc:
        errors.append({"path": str(path), "error": _name_path(path, str(exc))})
    except Exception as exc:  # noqa: BLE001
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        errors.append({"path": str(path), "error": _name_path(
            path, f"cannot be scored ({exc.__class__.__name__}: {first_line})")})
    return None


def _name_path(path, message: str) -> str:
    """Every error line names its file."""
    return message if message.startswith(str(path)) else f"{path}: {message}"


# ------------------------------------------------------------------------------ CLI


def format_result(result: dict) -> str:
    """The text lines of one result: file, label, p, all probabilities; then the windows."""
    probs = result["probabilities"]
    label = result["label"]
    others = "  ".join(f"{name} {p:.3f}" for name, p in probs.items())
    if label is None:  # no speech: no emotion to name
        lines = [f"{result['path']}\tno speech\t\t({others})\t{result['duration_s']:.2f} s"]
    else:
        lines = [f"{result['path']}\t{label}\t{probs[label]:.3f}\t({others})\t{result['duration_s']:.2f} s"]
    if len(result["windows"]) > 1:
        for w in result["windows"]:
            if w["label"] is None:
                lines.append(f"    {w['start_s']:7.2f}-{w['end_s']:7.2f} s\tno speech")
                continue
            p = w["probabilities"][w["label"]]
            lines.append(f"    {w['start_s']:7.2f}-{w['end_s']:7.2f} s\t{w['label']}\t{p:.3f}")
    for warning in result.get("warnings", []):
        lines.append(f"    note: {warning}")
    return "\n".join(lines)


def run_predict_command(model, paths, as_json: bool = False, plot=None, fold=None,
                        same_speaker: bool = False, runtime: str = "savedmodel") -> int:
    """``ser-keras predict``: print a line per file (or one JSON object), report every bad file.

    Returns 0 when at least one file was scored, 2 (``EXIT_NOTHING_SCORED``) when none was
    (bad files are reported on stderr, and in the JSON's ``errors``, either way). Errors in
    MODEL itself raise ``SerKerasError`` (the CLI prints it and exits 2 as well).
    """
    predictor = load_predictor(model, fold, runtime)
    report = predict_files(predictor, paths, same_speaker=same_speaker)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        for result in report["results"]:
            print(format_result(result))
    for error in report["errors"]:
        print(f"ser-keras predict: error: {error['error']}", file=sys.stderr)
    if plot and report["results"]:
        for error in plot_results(report, plot, predictor.feature_config):
            print(f"ser-keras predict: plot: {error}", file=sys.stderr)
    if not as_json and (report["errors"] or not report["results"]):
        print(f"ser-keras predict: scored {len(report['results'])} file(s), "
              f"{len(report['errors'])} could not be used", file=sys.stderr)
    return EXIT_OK if report["results"] else EXIT_NOTHING_SCORED
