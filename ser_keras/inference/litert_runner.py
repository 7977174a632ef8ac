"""Serve an export's ``model.tflite`` with LiteRT alone: NumPy + ``ai_edge_litert``, no TensorFlow.

    from ser_keras.inference.litert_runner import LiteRTModel

    model = LiteRTModel("export_dir/model.tflite")        # or the export directory
    out = model.serve(waveform)                             # float32 [samples], mono, 16 kHz
    out["probabilities"], out["attention"], out["speech"]   # [classes], [steps], bool

This module imports nothing of ser_keras that needs TensorFlow (``export.litert`` writes the
model; see its docstring for the signature). A recording of any length is one call: the input
is resized to it (``predict`` cuts recordings longer than the training length into windows, as
for the SavedModel). docs/litert.md has a copy-paste version that needs not even ser_keras.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys

import numpy as np

from ser_keras.errors import SerKerasError

LITERT_FILE = "model.tflite"
SIGNATURE = "serve"
EXPORT_FILE = "export.json"


@contextlib.contextmanager
def _runtime_log_hidden():
    """Standard error closed to LiteRT's C++ runtime, which writes "INFO: Created TensorFlow Lite
    XNNPACK delegate for CPU." there when it applies its CPU delegate, where TensorFlow's log
    level hides INFO lines (TF_CPP_MIN_LOG_LEVEL >= 1: the command line sets 3 unless
    --verbose); a failure still raises, with the runtime's message in the exception."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    if not (level.isdigit() and int(level) >= 1):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise SerKerasError("LiteRT is not installed: pip install ai-edge-litert "
                            "(or ser_keras[litert])") from None
    return Interpreter


class LiteRTModel:
    """One ``model.tflite`` in a LiteRT interpreter.

    Args:
        path: the ``.tflite`` file, or an export directory holding ``model.tflite``.
        num_threads: interpreter threads (None: LiteRT's default).

    Attributes:
        labels: the class labels (from ``export.json`` beside the model; ``class_0``... without it).
        meta: that ``export.json`` (an empty dict without it).
        sample_rate: Hz of the waveform ``serve`` takes.
    """

    def __init__(self, path, num_threads=None):
        path = pathlib.Path(path)
        if path.is_dir():
            path = path / LITERT_FILE
        if not path.is_file():
            raise SerKerasError(f"{path}: no such LiteRT model (export again with a ser_keras that writes "
                                f"{LITERT_FILE})")
        self.path = path
        meta_path = path.parent / EXPORT_FILE
        try:
            self.meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        except ValueError:
            raise SerKerasError(f"{meta_path}: not valid JSON") from None
        try:
            self.interpreter = _interpreter_class()(model_path=str(path), num_threads=num_threads)
            with _runtime_log_hidden():  # LiteRT applies its CPU delegate on the first allocation
                self.interpreter.allocate_tensors()
            self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        except (ValueError, RuntimeError) as exc:
            raise SerKerasError(f"{path}: not a ser_keras LiteRT model ({str(exc).splitlines()[0][:200]})") from None
        outputs = self.runner.get_output_details()
        self.sample_rate = int(self.meta.get("sample_rate", 16000))
        self.labels = list(self.meta.get("labels") or
                           [f"class_{i}" for i in range(int(outputs["probabilities"]["shape"][-1]))])
        self.input_name = next(iter(self.runner.get_input_details()))

    def serve(self, waveform) -> dict:
        """One mono float waveform ``[samples]`` in [-1, 1] at ``sample_rate`` -> ``probabilities``
        float32 ``[classes]``, ``attention`` float32 ``[steps]``, ``speech`` bool."""
        x = np.asarray(waveform, np.float32)
        if x.ndim != 1:
            raise SerKerasError(f"waveform: expected one mono recording [samples], got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise SerKerasError("waveform: holds NaN or Inf values; pass finite float audio")
        out = self.runner(**{self.input_name: x[None]})
        return {"probabilities": out["probabilities"][0], "attention": out["attention"][0],
                "speech": bool(out["speech"][0])}
