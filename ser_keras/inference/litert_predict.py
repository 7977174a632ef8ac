"""``ser-keras predict`` with the LiteRT model of an export (``--runtime litert``, or a ``.tflite``
file as MODEL): the windows, speech and pooling of ``inference.predict``, scored by
``litert_runner.LiteRTModel`` one window at a time instead of the SavedModel."""

from __future__ import annotations

import numpy as np

from ser_keras.config import Config
from ser_keras.errors import SerKerasError
from ser_keras.features.normalize import SPEAKER_MODES
from ser_keras.inference.fold import attention_steps
from ser_keras.inference.litert_runner import LiteRTModel
from ser_keras.inference.predictors import Predictor
from ser_keras.rundir import CONFIG_FILE, load_run_config


class LiteRTPredictor(Predictor):
    """An export's ``model.tflite`` (path of the file or of the export directory)."""

    def __init__(self, path):
        self.model = model = LiteRTModel(path)
        meta = model.meta
        if not meta:
            raise SerKerasError(f"{model.path}: no export.json beside it (predict needs the export's labels, "
                                "frame and attention geometry; keep model.tflite in its export directory)")
        export_dir = model.path.parent
        self.source = str(model.path)
        self.labels = list(meta["labels"])
        self.sample_rate = int(meta["sample_rate"])
        self.kind = "spectrogram"
        self.config = load_run_config(export_dir)[0] if (export_dir / CONFIG_FILE).is_file() else Config()
        self.feature_config = self.config.features
        self.frame = int(round(meta["frame_s"] * self.sample_rate))
        self.hop = int(round(meta["hop_s"] * self.sample_rate))
        self.step_frames = int(round(meta["attention_step_s"] / meta["hop_s"]))
        self.span_frames = int(round(meta["attention_span_s"] / meta["hop_s"]))
        self.window_frames = meta.get("window_frames")
        self.normalization = meta.get("serve_without_speaker", "pooled")
        # --same-speaker then asks for statistics, which the LiteRT model (serve only) refuses.
        self.speaker_adapted = meta.get("normalization") in SPEAKER_MODES
        self.std_floor = float(meta.get("norm_std_floor", 1e-3))

    def steps(self, n_frames: int) -> int:
        return attention_steps(n_frames, self.config)

    def require_statistics(self) -> None:
        raise SerKerasError(f"{self.source}: the LiteRT model has only the serve endpoint; "
                            "--same-speaker needs the SavedModel (--runtime savedmodel)")

    def score(self, batch, stats=None):
        if stats is not None:
            self.require_statistics()
        outputs = [self.model.serve(row) for row in np.asarray(batch, np.float32)]
        return (np.stack([o["probabilities"] for o in outputs]), np.stack([o["attention"] for o in outputs]))
