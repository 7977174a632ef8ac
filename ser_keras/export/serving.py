"""Export one fold of a run as a Keras SavedModel that needs nothing but TensorFlow.

``export_run(run_dir, out_dir, fold=None)`` writes ``out_dir``: the SavedModel (every endpoint
takes a raw float32 waveform ``[batch, samples]``), the fold's ``model.keras``, fitted front
end and ``config.yaml``, and ``export.json``. The files, the normalisation each endpoint
applies and every endpoint's inputs and outputs are described in ``docs/export_endpoints.md``.
The ``serve`` endpoint is also written as ``model.tflite``, a LiteRT model with builtin
operators only (``export.litert``; docs/litert.md), described in ``export.json["litert"]``.
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
from ser_keras.errors import SerKerasError
from ser_keras.evaluation.estimate import estimate_from as read_estimate
from ser_keras.export.graph import ServingGraph
from ser_keras.features.channels import PITCH_CHANNELS
from ser_keras.export.litert import write_litert
from ser_keras.features.functionals import FEATURE_NAMES
from ser_keras.features.llds import lld_names
from ser_keras.features.normalize import serving_normalization
from ser_keras.inference.fold import FoldModel, load_fold, speaker_adapted
from ser_keras.inference.predictors import EXPORT_FORMAT
from ser_keras.rundir import (CONFIG_FILE, EXPORT_FILE, FRONTEND_FILE, KERAS_MODEL_FILE, FoldDir, RunDir,
                              load_run_config)

# 2: serve_speaker, speaker_statistics, serve_with_statistics; export.json normalization,
# serve_without_speaker, norm_std_floor, feature_dim.
# 3: the speech output of every endpoint, level_normalization, training_data,
# accuracy_estimate; the metadata endpoint names the training data.
# 4: every experiment takes the waveform (exp2 computes its LLDs in the graph); "features"
# names what the graph computes from it; no fused_lstm.
# 5: model.tflite holds the functionals classifier too (litert.functionals).
EXPORT_FORMAT_VERSION = 5


def _export_metadata(bundle: FoldModel, jit_compile: bool) -> dict:
    config, p = bundle.config, bundle.params
    hop_s = p.hop / p.sample_rate
    meta = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "ser_keras_version": __version__,
        "labels": list(bundle.labels),
        "sample_rate": p.sample_rate,
        "input": "waveform",
        "input_signature": "waveform: float32 [batch, samples] at sample_rate",
        # What the graph computes from the waveform: the log spectrogram or exp2's LLDs.
        "features": p.kind,
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
        # The functionals classifier fused with the network (models.functionals), if any.
        "functionals": None if bundle.functionals is None else {
            "dim": len(FEATURE_NAMES),
            "weight": {condition: head.weight for condition, head in bundle.functionals.heads.items()},
            "rule": "probabilities = (1 - weight) * network + weight * softmax(functionals @ kernel + bias); "
                    "serve_speaker z-normalises the functionals over the batch's rows with speech, "
                    "serve/serve_lengths use them as computed"},
        "level_normalization": bool(p.level_normalization),
        # feature_dim counts them: n_bins + 2 (the last two columns of mean/std are theirs).
        "pitch_channels": list(PITCH_CHANNELS) if p.pitch_channels else [],
        # Every endpoint averages the model's outputs over these views (features.test_warp_factors).
        "test_warp_factors": list(p.test_warp_factors),
        "speech": {"threshold_dbfs": p.speech_threshold_dbfs, "min_contrast_db": p.speech_min_contrast_db,
                   "min_ms": p.speech_min_ms,
                   "rule": "speech when at least min_ms long, the mean power of the loudest fifth of the "
                           "frames is at least threshold_dbfs (re RMS 1.0) and at least min_contrast_db "
                           "above that of the quietest fifth; rows without speech get uniform probabilities"},
        "training_data": _training_data(bundle),
        "endpoints": {
            "serve": "probabilities [batch, classes], attention [batch, steps], speech int32 [batch] (1: the "
                     "row holds speech; 0: it does not, and its probabilities are uniform); each row one "
                     "recording, normalised as serve_without_speaker says (no speaker context)",
            "serve_lengths": "as serve, plus lengths int32 [batch] (valid samples per row)",
            "serve_speaker": ("as serve_lengths, all rows ONE speaker: normalised by the statistics of all "
                              "their valid frames (as fit normalises a test speaker)") if speaker_adapted(config)
            else "the same as serve_lengths (this model was not trained with per-speaker normalisation)",
            "speaker_statistics": "waveform, lengths -> mean, std float32 [feature_dim]; frames, sum, "
                                  "sum_squares float64 (to add up over calls), over the rows with speech; "
                                  "speech int32 [batch]",
            "serve_with_statistics": "as serve_lengths, plus mean, std float32 [feature_dim]: every row "
                                     "normalised with these (a speaker's, from speaker_statistics); with "
                                     "a functionals classifier also functionals_mean, functionals_std "
                                     "[functionals_dim] (of the speaker's wide_functionals rows)",
            "wide_functionals": "with a functionals classifier only: waveform, lengths -> functionals "
                                "float32 [batch, functionals_dim]",
            "labels": "labels string [classes], labels_file (assets/labels.txt)",
            "metadata": "sample_rate, attention_step_s, attention_span_s, corpus, protocol, fold, "
                        "training_speakers, n_training_utterances, level_normalization; with an accuracy "
                        "estimate: estimate_protocol, estimate_wa, estimate_ua, estimate_serving_wa, "
                        "estimate_serving_ua (-1 when unknown)",
        },
    }
    if p.kind == "lld":
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
               estimate_from=None, quantize: str = "none", litert: bool = True) -> pathlib.Path:
    """Export one fold of `run_dir` (default: the first) to `out_dir`; returns `out_dir`.

    Args:
        run_dir: a run directory written by ``ser-keras fit`` (a network, not an SVM).
        out_dir: the export directory; replaced if it holds an earlier export.
        fold: fold position (int, 0-based), fold name (str) or None for the first fold.
        jit_compile: compile the graph with XLA instead (buckets input lengths; each new bucket
            compiles once; ``export.graph``). Off by default: no faster on CPU, and it stalls
            to compile every new bucket.
        estimate_from: a run of the same config under a test protocol whose figures estimate
            the model's accuracy (``evaluation.estimate``); default: the run's estimate.json.
        quantize: the LiteRT model's weights (``export.litert``): "none" (float32), "float16" (the
            network's), "int8" (refused with a functionals classifier).
        litert: also write ``model.tflite`` (its conversion is about half the export's time).

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
    if jit_compile and bundle.params.kind == "lld":
        raise SerKerasError(f"{run_dir}: an XLA export cannot compute {config.model.experiment}'s LLDs (the formants' "
                            "root finding has no XLA kernel); export it without jit_compile")
    graph = ServingGraph(bundle, jit_compile=jit_compile)
    meta = _export_metadata(bundle, jit_compile)
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
        statistics_specs = [spec, lengths_spec, tf.TensorSpec([dim], tf.float32, name="mean"),
                            tf.TensorSpec([dim], tf.float32, name="std")]
        if graph.functionals is not None:  # and the speaker's functionals statistics
            statistics_specs += [tf.TensorSpec([len(FEATURE_NAMES)], tf.float32, name="functionals_mean"),
                                 tf.TensorSpec([len(FEATURE_NAMES)], tf.float32, name="functionals_std")]
            archive.add_endpoint("wide_functionals", graph.wide_functionals, input_signature=[spec, lengths_spec])
        archive.add_endpoint("serve_with_statistics", graph.serve_with_statistics, input_signature=statistics_specs)
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
        if litert and bundle.params.kind != "lld":  # model.tflite (export.litert); exp2's LLDs are not in the graph
            meta["litert"] = write_litert(ServingGraph(bundle, fused=False), staging, quantize)
            meta["litert"]["functionals"] = bundle.functionals is not None
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
