"""``ser-keras predict`` with the LiteRT model of an export (``--runtime litert``, or a ``.tflite``
file as MODEL): the windows, speech and pooling of ``inference.predict``, scored by
``litert_runner.LiteRTModel`` one window at a time instead of the SavedModel."""

from __future__ import annotations


import numpy as np

from ser_keras.errors import SerKerasError
from ser_keras.inference.fold import attention_steps
from ser_keras.inference.litert_runner import LiteRTModel
from ser_keras.inference.predictors import Predictor


class LiteRTPredictor(Predictor):
    """An export's ``model.tflite`` (path of the file or of the export directory)."""

    def __init__(self, path):
        self.model = model = LiteRTModel(path)
        meta = model.meta
        if not meta:
            raise SerKerasError(f"{model.path}: no export.json beside it (predict needs the export's labels, "
                                "frame and attention geometry; keep model.tflite in its export directory)")
        if meta.get("functionals") and not meta.get("litert", {}).get("functionals"):
            raise SerKerasError(f"{model.path}: holds the network only, without the functionals classifier the "
                                f"SavedModel fuses with it (export format {meta.get('format_version')}); "
                                "export the run again")
        self.source = str(model.path)
        self.kind = "spectrogram"
        # speaker_adapted models then ask for statistics with --same-speaker, which the LiteRT
        # model (serve only) refuses in require_statistics.
        self.read_export_geometry(meta, model.path.parent)

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
