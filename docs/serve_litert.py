"""Serve a recording with only ai-edge-litert, numpy and soundfile installed (docs/litert.md).

    python serve_litert.py EXPORT_DIR recording.wav

EXPORT_DIR is what `ser-keras export` wrote (model.tflite + export.json). Any channel count (mixed
to mono) and sample rate (resampled to the export's, 16 kHz by default).
"""

import json
import pathlib
import resource
import sys

import numpy as np
import soundfile
from ai_edge_litert.interpreter import Interpreter

export_dir, wav = pathlib.Path(sys.argv[1]), sys.argv[2]
meta = json.loads((export_dir / "export.json").read_text())
runner = Interpreter(model_path=str(export_dir / "model.tflite")).get_signature_runner("serve")


def resample(x, rate_in, rate_out):
    """Band-limited resampling by FFT (ser-keras itself uses soxr: close, not identical)."""
    n = int(round(len(x) * rate_out / rate_in))
    spectrum = np.fft.rfft(x)[: n // 2 + 1]
    return (np.fft.irfft(spectrum, n) * (n / len(x))).astype(np.float32)


waveform, rate = soundfile.read(wav, dtype="float32", always_2d=True)
waveform = waveform.mean(axis=1)  # mono
if rate != meta["sample_rate"]:
    waveform = resample(waveform, rate, meta["sample_rate"])

# One recording per call, any length: the runner resizes the input to it.
out = runner(waveform=waveform[None])
probabilities = out["probabilities"][0]
if not out["speech"][0]:
    print(f"{wav}: no speech")
else:
    best = int(np.argmax(probabilities))
    print(f"{wav}: {meta['labels'][best]} {probabilities[best]:.3f}  "
          + "  ".join(f"{label} {p:.3f}" for label, p in zip(meta["labels"], probabilities)))
step = meta["attention_step_s"]
peak = int(np.argmax(out["attention"][0]))
print(f"most attended: {peak * step:.2f}-{peak * step + meta['attention_span_s']:.2f} s; "
      f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
