"""Export one fold of a run as a Keras SavedModel that needs nothing but TensorFlow.

``export_run(run_dir, out_dir, fold=None)`` writes ``out_dir`` with:

- ``saved_model.pb``, ``variables/``, ``assets/labels.txt`` — the SavedModel
  (``keras.export.ExportArchive``), loadable with ``tf.saved_model.load`` in a process that has
  never heard of ser_keras, and by ``saved_model_cli`` / TF Serving;
- ``model.keras`` — the fold's Keras model (features -> probabilities), plus the fold's fitted
  front end and ``config.yaml`` from the run, so the export can also be used in-process;
- ``model.tflite`` — the ``serve`` endpoint as a LiteRT model, builtin operators only
  (``export.litert``, waveform models; docs/litert.md), described in ``export.json["litert"]``;
- ``export.json`` — labels, sample rate, attention step and span in seconds, experiment,
  protocol, fold, the normalisation (``normalization``, ``serve_without_speaker``,
  ``norm_std_floor``), ``feature_dim`` (``n_bins``, plus the ``pitch_channels`` it lists when
  the run appended log F0 and voicing to every frame; the graph computes them too), the
  endpoints.

Normalisation. The features are normalised per dimension before the PCA, as in training
(``features.normalization``). The shipped experiment configs normalise each speaker by the
mean/std of all of their frames (``speaker``; ``neutral_speaker`` too, for a speaker unseen in
training), and ``fit``'s protocol figure (``results.json["pooled"]``) scores every test speaker
that way: it is a figure for *speaker-adapted* use, where several recordings of the speaker are
at hand. The export offers both uses:

- one recording, no speaker context (``serve``, ``serve_lengths``): normalised with the
  statistics pooled over the fold's training speakers (``export.json["serve_without_speaker"]``
  is ``"pooled"``; ``"none"`` for a model trained without normalisation). That measured far
  better than each recording's own statistics (``bench/normalisation.py``, exp4 LOSO, UA %:
  EMO-DB 52.0 pooled vs 22.9 per utterance; demo 42.2 vs 25.0), but below the speaker-adapted
  figure (EMO-DB 62.6). ``fit`` reports what single recordings get on its test folds as
  ``results.json["serving"]`` (``serving_wa``/``serving_ua`` per fold);
- several recordings of one speaker (``serve_speaker``): the statistics of all of them, exactly
  as ``fit`` normalises a test speaker, so ``fit``'s protocol figure (``results.json["pooled"]``)
  is what this endpoint gives when it gets all of a speaker's recordings;
- statistics kept from earlier recordings of the speaker (enrolment: ``speaker_statistics``
  once, then ``serve_with_statistics`` for every new recording). Measured on EMO-DB, UA % with
  the statistics of k recordings: 39.1 (k=1), 48.7 (k=3), 58.6 (k=10) — below the pooled
  statistics until several recordings are in.

Endpoints (signatures) of the SavedModel:

``serve`` (also ``serving_default``)
    exp3/exp4: ``waveform``: float32 ``[batch, samples]``, mono, at the run's sample rate
    (``export.json["sample_rate"]``, 16 kHz by default — resample before calling; the endpoint
    cannot know the rate of what it is given), any length. Every row is one recording of
    ``samples`` samples; a recording shorter than one 20 ms frame is zero-padded to one frame.
    Mix stereo to mono first: a ``[samples, channels]`` array would be read as a batch of
    ``samples`` one-frame recordings. (``ser-keras predict`` reads any file through
    ``ser_keras.audio.load_audio``, which mixes to mono and resamples before the endpoint.)
    exp2: ``features``: float32 ``[batch, frames, D]``, the LLD matrix of
    ``ser_keras.features.llds.frame_llds`` (F0, formants, energy, ZCR, MFCC cannot run in the
    graph), un-normalised; the normalisation is in the graph.
    Returns ``probabilities`` ``[batch, classes]`` (softmax, label order of ``labels``) and
    ``attention`` ``[batch, steps]``: the attention weights of the model's attention pooling
    (exp4), one per recurrent step; step ``j`` covers input frames
    ``[j * step, j * step + span)`` (``attention_step_s`` / ``attention_span_s`` in seconds).
    Weights sum to 1 over a recording's steps. Models without attention (exp3, exp2) have no
    learned weights: their ``attention`` is defined as uniform, ``1 / steps`` on every step,
    so consumers can treat every export alike.
``serve_lengths``
    Same, plus ``lengths``: int32 ``[batch]``, the valid samples (exp2: frames) of each row, for
    batches of recordings of different lengths zero-padded at the end. Each row's result equals
    what ``serve`` gives for that recording alone; ``attention`` is zero past a row's steps.
``serve_speaker``
    ``waveform`` ``[batch, samples]`` and ``lengths`` ``[batch]`` as for ``serve_lengths``, but
    all rows are recordings of ONE speaker: the normalisation statistics are the mean/std over
    all valid frames of all rows (std floored at ``norm_std_floor``), as ``fit`` normalises a
    test speaker (``features.normalization=speaker``); every row is then scored with them.
    (For a model trained without per-speaker normalisation — ``neutral_global``, ``none`` — it
    is ``serve_lengths``: such a model never saw speaker statistics.)
    Returns ``probabilities`` and ``attention`` per row, as ``serve_lengths``. The result of a
    row depends on the other rows (through the statistics) — send one speaker per call, and
    enough speech: with one to three recordings ``serve`` (pooled statistics) is better; about
    ten come close to what ``fit`` reports (``bench/normalisation.py``, "enrol k").
``speaker_statistics``
    ``waveform``, ``lengths`` as above; returns the statistics of all valid frames of the batch:
    ``mean``, ``std`` (float32 ``[D]``, D the feature dimension before the PCA), and the moments
    ``frames`` (float64 scalar), ``sum``, ``sum_squares`` (float64 ``[D]``) so that statistics of
    several calls can be added up (mean = sum / frames, std = max(sqrt(sum_squares / frames -
    mean^2), norm_std_floor)).
``serve_with_statistics``
    ``waveform``, ``lengths``, ``mean``, ``std`` (float32 ``[D]``): every row normalised with the
    given statistics (of its speaker, from ``speaker_statistics``), then scored as ``serve_lengths``.
``labels``
    No input; returns ``labels``: string ``[classes]`` and ``labels_file``, the path of
    ``assets/labels.txt`` (one label per line) in the loaded export.
``metadata``
    No input; ``sample_rate`` (int32), ``attention_step_s``, ``attention_span_s`` (float32);
    what the model was trained on: ``corpus``, ``protocol``, ``fold`` (string),
    ``training_speakers`` (string ``[n]``), ``n_training_utterances`` (int32, -1 if unknown),
    ``level_normalization`` (bool); the protocol figure that estimates it (``fit --protocol all
    --estimate-from`` or ``export --estimate-from``): ``estimate_protocol`` (string, empty when
    none), ``estimate_wa``, ``estimate_ua``, ``estimate_serving_wa``, ``estimate_serving_ua``
    (float32, -1 when none). ``export.json`` holds the same as ``training_data`` and
    ``accuracy_estimate``.

Speech. Every scoring endpoint also returns ``speech``: int32 ``[batch]``, 1 where the row holds
speech, 0 where it does not (``features.level``: too short, too quiet, or steady noise; the
thresholds are the run's ``features.speech_*``, in ``export.json["speech"]``). A row without
speech gets uniform probabilities (``1 / classes``): the export names no emotion it has no
speech for. ``serve_speaker`` and ``speaker_statistics`` leave such rows out of the speaker's
statistics. exp2 exports take LLDs, not a waveform: every row counts as speech there.

Level. A run trained with ``features.level_normalization`` subtracts each recording's level
reference (``features.level``) from its log spectrogram in the graph too, before any
normalisation, over the row's valid frames only (``serve_lengths``, padded batches).

Inputs holding NaN or Inf are rejected with a message that says so. Inputs of the wrong dtype
or rank are rejected: calling ``loaded.serve(x)`` with a tensor
checks it against the TensorSpec (TypeError naming the expected spec), ``saved_model_cli`` and
TF Serving check the feed, and the graph itself asserts the rank with a message naming the input
(for callers of ``loaded.signatures[...]``, which do not check shapes). NumPy arrays of another
dtype are cast to float32 by TensorFlow's argument binding; so that integer PCM passed that way
is not scored as a very loud recording, a waveform with samples beyond +-64 is rejected with a
message saying to scale it (int16: divide by 32768).

Speed and the XLA variant: ``export.graph``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import shutil
import tempfile
import typing

import keras
import tensorflow as tf

from ser_keras import __version__
from ser_keras.config import load_run_config
from ser_keras.errors import SerKerasError
from ser_keras.evaluation.estimate import estimate_from as read_estimate
from ser_keras.export.bundle import FoldModel, load_fold
from ser_keras.export.graph import ServingGraph, speaker_adapted
from ser_keras.export.litert import write_litert
from ser_keras.features.llds import lld_names
from ser_keras.features.normalize import serving_normalization
from ser_keras.features.pitch import PITCH_CHANNELS
from ser_keras.rundir import CONFIG_FILE, EXPORT_FILE, FRONTEND_FILE, KERAS_MODEL_FILE, FoldDir, RunDir

EXPORT_FORMAT = "ser_keras-savedmodel"
# 2: serve_speaker, speaker_statistics, serve_with_statistics; export.json normalization,
# serve_without_speaker, norm_std_floor, feature_dim.
# 3: the speech output of every endpoint, level_normalization, training_data,
# accuracy_estimate; the metadata endpoint names the training data.
EXPORT_FORMAT_VERSION = 3


def _export_metadata(bundle: FoldModel, jit_compile: bool) -> dict:
    config, p = bundle.config, bundle.params
    hop_s = p.hop / p.sample_rate
    waveform = p.kind == "spectrogram"
    meta = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "ser_keras_version": __version__,
        "labels": list(bundle.labels),
        "sample_rate": p.sample_rate,
        "input": "waveform" if waveform else "lld",
        "input_signature": ("waveform: float32 [batch, samples] at sample_rate" if waveform else
                            f"features: float32 [batch, frames, {p.input_dim}] "
                            "(ser_keras.features.llds.frame_llds, un-normalised)"),
        "frame_s": p.frame / p.sample_rate,
        "hop_s": hop_s,
        "attention": "learned" if bundle.has_attention else "uniform",
        "attention_step_s": bundle.step_frames * hop_s,
        "attention_span_s": bundle.span_frames * hop_s,
        "window_frames": config.features.max_frames,
        "experiment": config.model.experiment,
        "protocol": config.train.protocol,
        "corpus": config.data.corpus,
        "fold": bundle.fold,
        "run_dir": str(bundle.run_dir.resolve()),
        "jit_compile": bool(jit_compile),
        "normalization": config.features.normalization,
        "serve_without_speaker": serving_normalization(config.features.normalization),
        "serve_without_speaker_note": _SERVE_NOTES[serving_normalization(config.features.normalization)],
        "norm_std_floor": p.std_floor,
        "feature_dim": p.input_dim,
        "level_normalization": bool(p.level_normalization),
        # feature_dim counts them: n_bins + 2 (the last two columns of mean/std are theirs).
        "pitch_channels": list(PITCH_CHANNELS) if p.pitch_channels else [],
        # Every endpoint averages the model's outputs over these views (features.test_warp_factors).
        "test_warp_factors": list(p.test_warp_factors),
        "speech": {"threshold_dbfs": p.speech_threshold_dbfs, "min_contrast_db": p.speech_min_contrast_db,
                   "min_ms": p.speech_min_ms,
                   "rule": "speech when at least min_ms long, the mean power of the loudest fifth of the "
                           "frames is at least threshold_dbfs (re RMS 1.0) and at least min_contrast_db "
                           "above that of the quietest fifth; rows without speech get uniform probabilities"
                   if waveform else "LLD input: every row counts as speech"},
        "training_data": _training_data(bundle),
        "endpoints": {
            "serve": "probabilities [batch, classes], attention [batch, steps], speech int32 [batch] (1: the "
                     "row holds speech; 0: it does not, and its probabilities are uniform); each row one "
                     "recording, normalised as serve_without_speaker says (no speaker context)",
            "serve_lengths": "as serve, plus lengths int32 [batch] (valid samples or frames per row)",
            "serve_speaker": ("as serve_lengths, all rows ONE speaker: normalised by the statistics of all "
                              "their valid frames (as fit normalises a test speaker)") if speaker_adapted(config)
            else "the same as serve_lengths (this model was not trained with per-speaker normalisation)",
            "speaker_statistics": "waveform, lengths -> mean, std float32 [feature_dim]; frames, sum, "
                                  "sum_squares float64 (to add up over calls), over the rows with speech; "
                                  "speech int32 [batch]",
            "serve_with_statistics": "as serve_lengths, plus mean, std float32 [feature_dim]: every row "
                                     "normalised with these (a speaker's, from speaker_statistics)",
            "labels": "labels string [classes], labels_file (assets/labels.txt)",
            "metadata": "sample_rate, attention_step_s, attention_span_s, corpus, protocol, fold, "
                        "training_speakers, n_training_utterances, level_normalization; with an accuracy "
                        "estimate: estimate_protocol, estimate_wa, estimate_ua, estimate_serving_wa, "
                        "estimate_serving_ua (-1 when unknown)",
        },
    }
    if not waveform:
        meta["lld_names"] = lld_names(config.features)
    return meta


def _training_data(bundle: FoldModel) -> dict:
    """What the exported model was trained on, from the fold's result.json (runs made before
    it named the speakers give null there)."""
    result = FoldDir(bundle.fold_dir).read_result()
    return {"corpus": bundle.config.data.corpus, "protocol": bundle.config.train.protocol, "fold": bundle.fold,
            "training_speakers": result.get("training_speakers"),
            "n_training_utterances": result.get("n_training_utterances"),
            "validation_speakers": result.get("validation_speakers"),
            "test_speakers": None if bundle.config.train.protocol == "all" else _test_speakers(bundle)}


def _test_speakers(bundle: FoldModel):
    entry = RunDir(bundle.run_dir).fold_entry(bundle.fold)
    return None if entry is None else entry.get("test_speakers")


def _accuracy_estimate(bundle: FoldModel, estimate_from) -> typing.Optional[dict]:
    """The protocol figure that estimates the model: `estimate_from` (a run of the same config),
    else the run's estimate.json (``fit --protocol all --estimate-from``), else None."""
    if estimate_from is not None:
        return read_estimate(bundle.config, estimate_from)
    path = RunDir(bundle.run_dir).estimate
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            raise SerKerasError(f"{path}: not valid JSON") from None
    return None


_SERVE_NOTES = {
    "pooled": "serve/serve_lengths normalise each recording with the statistics pooled over the training "
              "speakers (no speaker context); for a speaker-normalised model the run's "
              "results.json['serving'] is what that gives on its test folds, results.json['pooled'] what "
              "serve_speaker gives with all of a test speaker's recordings",
    "none": "no normalisation (features.normalization=none)",
}


@contextlib.contextmanager
def _quiet_tf_info():
    """Hide TensorFlow's INFO log lines (the SavedModel writer's "Assets written to: ...")."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _prepare_out_dir(out_dir: pathlib.Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise SerKerasError(f"{out_dir}: exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / EXPORT_FILE).is_file():
            raise SerKerasError(f"{out_dir}: exists, is not empty and is not a ser_keras export; "
                                "choose another --out")


def export_run(run_dir, out_dir, fold: typing.Union[int, str, None] = None, jit_compile: bool = False,
               fused_lstm: bool = True, estimate_from=None, quantize: str = "none") -> pathlib.Path:
    """Export one fold of `run_dir` (default: the first) to `out_dir`; returns `out_dir`.

    Args:
        run_dir: a run directory written by ``ser-keras fit`` (a network, not an SVM).
        out_dir: the export directory; replaced if it holds an earlier export.
        fold: fold position (int, 0-based), fold name (str) or None for the first fold.
        jit_compile: compile the graph with XLA instead (buckets input lengths; each new bucket
            compiles once; see the module docstring). Off by default: the fused LSTM path is
            as fast on CPU without compilation stalls.
        fused_lstm: run the recurrent layers with TensorFlow's fused LSTM kernel
            (``export.fastgraph``; same numbers as Keras, several times faster on CPU).
        estimate_from: a run of the same config under a test protocol whose figures estimate
            the model's accuracy (``evaluation.estimate``); default: the run's estimate.json.
        quantize: the LiteRT model's weights (``export.litert``): "none" (float32), "float16", "int8".

    Raises:
        SerKerasError: exp1 runs (an SVM, not a Keras model), a missing fold, a non-export
            ``out_dir`` that is not empty.
    """
    run_dir = pathlib.Path(run_dir)
    out_dir = pathlib.Path(out_dir)
    config, _ = load_run_config(run_dir)
    if config.model.classifier == "svm":
        raise SerKerasError(f"{run_dir}: export is not available for exp1 (LLD functionals + SVM): "
                            "only the Keras models of exp2, exp3 and exp4 can be exported")
    _prepare_out_dir(out_dir)
    bundle = load_fold(run_dir, fold)
    graph = ServingGraph(bundle, jit_compile=jit_compile, fused_lstm=fused_lstm)
    meta = _export_metadata(bundle, jit_compile)
    meta["fused_lstm"] = graph.fused_lstm
    meta["accuracy_estimate"] = _accuracy_estimate(bundle, estimate_from)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    # mkdtemp makes the directory 0700 (private while it is written); the export is renamed to
    # its final name as it is, so give it what mkdir would have given it under the user's umask.
    os.chmod(staging, 0o777 & ~_current_umask())
    try:
        labels_path = staging / "labels.txt"
        labels_path.write_text("".join(f"{label}\n" for label in bundle.labels))
        archive = keras.export.ExportArchive()
        # No archive.track(model): the endpoints' variables are tracked from the traced
        # functions, and tracking the model itself walks every layer attribute (a dict
        # keyed by int, as SparseAEConv holds, cannot be walked by the SavedModel saver).
        labels_asset = tf.saved_model.Asset(str(labels_path))
        # ExportArchive has no public hook for assets; an Asset attached to the object it
        # saves is copied into assets/ and its path re-pointed there on load.
        archive._tf_trackable.labels_file = labels_asset
        spec = graph.input_spec()
        archive.add_endpoint("serve", graph.serve, input_signature=[spec])
        lengths_spec = tf.TensorSpec([None], tf.int32, name="lengths")
        archive.add_endpoint("serve_lengths", graph.serve_lengths, input_signature=[spec, lengths_spec])
        archive.add_endpoint("serve_speaker", graph.serve_speaker, input_signature=[spec, lengths_spec])
        archive.add_endpoint("speaker_statistics", graph.speaker_statistics,
                             input_signature=[spec, lengths_spec])
        dim = bundle.params.input_dim
        archive.add_endpoint("serve_with_statistics", graph.serve_with_statistics, input_signature=[
            spec, lengths_spec, tf.TensorSpec([dim], tf.float32, name="mean"),
            tf.TensorSpec([dim], tf.float32, name="std")])
        labels = list(bundle.labels)
        archive.add_endpoint("labels", lambda: {"labels": tf.constant(labels, tf.string),
                                                "labels_file": labels_asset.asset_path},
                             input_signature=[])
        archive.add_endpoint("metadata", lambda: _metadata_endpoint(meta, bundle.sample_rate), input_signature=[])
        saved = staging / "saved"
        with _quiet_tf_info():
            archive.write_out(str(saved), verbose=False)
        for item in saved.iterdir():
            item.rename(staging / item.name)
        saved.rmdir()
        labels_path.unlink()
        fold_dir = FoldDir(bundle.fold_dir)
        # Saved from the model as loaded (compile=False), not copied: the fold's file also holds
        # the optimizer's slots and moving average, several times the weights, which nothing
        # that reads an export uses.
        bundle.model.save(staging / KERAS_MODEL_FILE)
        shutil.copyfile(fold_dir.frontend, staging / FRONTEND_FILE)
        shutil.copyfile(RunDir(bundle.run_dir).config, staging / CONFIG_FILE)
        if bundle.params.kind != "lld":  # model.tflite (export.litert); exp2's LLDs are not in the graph
            meta["litert"] = write_litert(ServingGraph(bundle, fused_lstm=False), staging, quantize)
        (staging / EXPORT_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _metadata_endpoint(meta: dict, rate: int) -> dict:
    """The ``metadata`` endpoint's constants: what a plain-TensorFlow caller needs to know."""
    data = meta["training_data"]
    estimate = meta.get("accuracy_estimate") or {}

    def number(value):
        return tf.constant(-1.0 if value is None else float(value), tf.float32)

    return {
        "sample_rate": tf.constant(rate, tf.int32),
        "attention_step_s": tf.constant(meta["attention_step_s"], tf.float32),
        "attention_span_s": tf.constant(meta["attention_span_s"], tf.float32),
        "corpus": tf.constant(str(data["corpus"])),
        "protocol": tf.constant(str(data["protocol"])),
        "fold": tf.constant(str(data["fold"])),
        "training_speakers": tf.constant([str(s) for s in data["training_speakers"] or []], tf.string),
        "n_training_utterances": tf.constant(-1 if data["n_training_utterances"] is None
                                             else int(data["n_training_utterances"]), tf.int32),
        "level_normalization": tf.constant(bool(meta["level_normalization"])),
        "estimate_protocol": tf.constant(str(estimate.get("protocol_name") or estimate.get("protocol") or "")),
        "estimate_wa": number(estimate.get("wa")),
        "estimate_ua": number(estimate.get("ua")),
        "estimate_serving_wa": number(estimate.get("serving_wa")),
        "estimate_serving_ua": number(estimate.get("serving_ua")),
    }


def _current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def read_export_json(export_dir) -> dict:
    """The export.json of an export directory (SerKerasError naming the file if unusable)."""
    path = pathlib.Path(export_dir) / EXPORT_FILE
    if not path.is_file():
        raise SerKerasError(f"{export_dir}: not a ser_keras export (no export.json)")
    try:
        meta = json.loads(path.read_text())
    except ValueError:
        raise SerKerasError(f"{path}: not valid JSON") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise SerKerasError(f"{path}: not a ser_keras export (format {meta.get('format')!r})")
    return meta
