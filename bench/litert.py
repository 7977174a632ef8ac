"""The export's LiteRT model (model.tflite) against its SavedModel (issue #31).

    python bench/litert.py --model EXPORT_DIR [--quantized DIR ...] [--files N] [--seconds 10]

Prints, for the export's float32 model.tflite:
- parity with the SavedModel's ``serve`` on N EMO-DB recordings (``SER_KERAS_CORPORA``/emodb/wav;
  skipped without it): max and median |dp|, how many exceed 1e-4, labels and speech flags that
  differ. model.tflite holds the network only: for an export that fuses a functionals
  classifier, the reference is the same network's serving graph without it, rebuilt from the
  run directory ``export.json`` names, and the fused SavedModel's labels are counted beside;
- speed at batch 1 on a ``--seconds`` clip: x real-time of both, side by side, in this process
  (``litert_speed`` is the function bench/inference.py can call);
- with ``--speed-only``: LiteRT's speed and the process's peak resident memory as one JSON line,
  TensorFlow never imported (what bench/inference.py prints beside the SavedModel's);
- size of model.tflite; each ``--quantized`` export's (float16 / int8) size and deviation from
  the float32 LiteRT model on the same recordings.
The peak resident memory of a LiteRT-only process is measured by docs/serve_litert.py run in an
environment with only ai-edge-litert, numpy and soundfile (docs/litert.md).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def _clip(np, seconds: float, rate: int = 16000):
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    voiced = np.sin(2 * np.pi * 140 * t * (1 + 0.05 * np.sin(2 * np.pi * 3 * t)))
    return (0.3 * voiced * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t) ** 2)
            + 0.01 * rng.normal(size=t.shape)).astype(np.float32)


def _median_time(call, min_repeats: int = 5, min_time: float = 2.0) -> float:
    call()  # first call (and LiteRT's buffer planning for this length) not timed
    times, start = [], time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def litert_speed(export_dir, seconds: float = 10.0, savedmodel: bool = True) -> dict:
    """x real-time of the export's LiteRT model (and of its SavedModel when `savedmodel`) on one
    `seconds` clip at batch 1, median of timed calls in this process."""
    import numpy as np

    from ser_keras.inference.litert_runner import LiteRTModel

    x = _clip(np, seconds)
    model = LiteRTModel(export_dir)
    row = {"seconds": seconds, "litert_xrt": seconds / _median_time(lambda: model.serve(x))}
    if savedmodel:
        import tensorflow as tf

        loaded = tf.saved_model.load(str(export_dir))
        batch = x[None]
        row["savedmodel_xrt"] = seconds / _median_time(lambda: loaded.serve(batch))
    return row


def _peak_rss_mb() -> float:
    """This process's peak resident memory. On Linux VmHWM: ru_maxrss keeps the peak of the
    process that forked this one (a TensorFlow process, when bench/inference.py starts it)."""
    status = pathlib.Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e3
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / (1e6 if sys.platform == "darwin" else 1e3)


def _emodb_files(n: int) -> list:
    root = pathlib.Path(os.environ.get("SER_KERAS_CORPORA", pathlib.Path(__file__).resolve().parents[2]
                                       / "shared" / "corpora")) / "emodb" / "wav"
    files = sorted(root.glob("*.wav"))
    return files[:: max(1, len(files) // n)][:n] if n else files


def _deviation(np, a: list, b: list) -> str:
    dp = np.array([np.abs(x - y).max() for x, y in zip(a, b)])
    flips = sum(int(np.argmax(x) != np.argmax(y)) for x, y in zip(a, b))
    return (f"max |dp| {dp.max():.2e}  median {np.median(dp):.2e}  > 1e-4: {int((dp > 1e-4).sum())}/{len(dp)}  "
            f"labels differ: {flips}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=pathlib.Path, help="export directory (float32 LiteRT)")
    parser.add_argument("--quantized", nargs="*", type=pathlib.Path, default=[],
                        help="exports of the same run with --quantize float16 / int8")
    parser.add_argument("--files", type=int, default=100, help="EMO-DB recordings (0: all)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--speed-only", action="store_true",
                        help="only LiteRT's speed and this process's peak RSS, as one JSON line, without "
                             "importing TensorFlow (bench/inference.py runs it in a fresh process)")
    args = parser.parse_args(argv)
    if args.speed_only:
        row = litert_speed(args.model, args.seconds, savedmodel=False)
        row["peak_rss_mb"] = _peak_rss_mb()
        row["tensorflow_imported"] = "tensorflow" in sys.modules
        print(json.dumps(row))
        return 0

    import numpy as np
    import tensorflow as tf

    from ser_keras.audio import load_audio
    from ser_keras.inference.litert_runner import LiteRTModel

    model = LiteRTModel(args.model)
    print(f"model.tflite {model.path.stat().st_size / 1e6:.2f} MB ({model.meta.get('litert', {}).get('quantize')})")
    files = _emodb_files(args.files)
    if files:
        loaded = tf.saved_model.load(str(args.model))
        waves = [load_audio(f, model.sample_rate) for f in files]  # mono, resampled as predict does
        lite = [model.serve(w) for w in waves]
        saved = [{k: v.numpy()[0] for k, v in loaded.serve(w[None]).items()} for w in waves]
        name = "the SavedModel"
        if model.meta.get("functionals") and not model.meta.get("litert", {}).get("functionals"):
            from ser_keras.export.graph import ServingGraph
            from ser_keras.inference.fold import load_fold

            graph = ServingGraph(load_fold(model.meta["run_dir"], model.meta["fold"]), with_functionals=False)
            fused = [x["probabilities"] for x in saved]
            saved = [{k: v.numpy()[0] for k, v in graph.serve(tf.constant(w[None])).items()} for w in waves]
            name = "the export's network (without the functionals classifier, as model.tflite)"
            differ = sum(int(np.argmax(x["probabilities"]) != np.argmax(y)) for x, y in zip(lite, fused))
            print(f"the fused SavedModel's label differs from LiteRT's on {differ}/{len(files)}")
        print(f"parity with {name} on {len(files)} EMO-DB recordings: "
              + _deviation(np, [x["probabilities"] for x in lite], [x["probabilities"] for x in saved])
              + f"  speech differs: {sum(int(x['speech'] != bool(y['speech'])) for x, y in zip(lite, saved))}")
        for other in args.quantized:
            small = LiteRTModel(other)
            out = [small.serve(w)["probabilities"] for w in waves]
            print(f"{small.meta.get('litert', {}).get('quantize')}: {small.path.stat().st_size / 1e6:.2f} MB, "
                  "against float32 LiteRT: " + _deviation(np, out, [x["probabilities"] for x in lite]))
    else:
        print("EMO-DB not found: parity and quantisation skipped")
    row = litert_speed(args.model, args.seconds)
    fused = " (network + functionals)" if model.meta.get("functionals") else ""
    print(f"{args.seconds:g} s clip, batch 1: SavedModel{fused} {row['savedmodel_xrt']:.0f}x real-time, "
          f"LiteRT {row['litert_xrt']:.0f}x real-time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
