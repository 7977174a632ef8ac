"""The export's LiteRT model (model.tflite) against its SavedModel (issue #31).

    python bench/litert.py --model EXPORT_DIR [--quantized DIR ...] [--files N] [--seconds 10]
    python bench/litert.py --run RUN_DIR [--quantize none,float16,int8]

Prints, for the export's float32 model.tflite:
- parity with the SavedModel's ``serve`` on N EMO-DB recordings (``SER_KERAS_CORPORA``/emodb/wav;
  skipped without it): max and median |dp|, how many exceed 1e-4, labels and speech flags that
  differ (both hold the network and, in the default, the functionals classifier fused with it);
- speed at batch 1 on a ``--seconds`` clip: x real-time of both, side by side, in this process
  (``litert_speed`` is the function bench/inference.py can call);
- with ``--speed-only``: LiteRT's speed and the process's peak resident memory as one JSON line,
  TensorFlow never imported (what bench/inference.py prints beside the SavedModel's);
- size of model.tflite; each ``--quantized`` export's (float16 / int8) size and deviation from
  the float32 LiteRT model on the same recordings.
With ``--run``: the accuracy of a finished fit run's folds served one recording at a time through
model.tflite at each ``--quantize`` (each fold's serving graph converted as ``export`` converts it,
into a temporary directory): WA / UA over every fold's test recordings, the model's size, and
against the fold's in-process single-recording figure (``serving_predictions.csv``, what fit
reports as "single"): the labels that differ and the largest |dp|.
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


def run_accuracy(run_dir: pathlib.Path, quantizations: list) -> list:
    """One row per quantisation: WA, UA, n, mean model size, labels that differ from the run's
    in-process single-recording predictions and the largest |dp| against them."""
    import tempfile

    import numpy as np
    import pandas as pd

    from ser_keras.audio import load_audio
    from ser_keras.export.graph import ServingGraph
    from ser_keras.export.litert import write_litert
    from ser_keras.inference.fold import load_fold
    from ser_keras.inference.litert_runner import LiteRTModel
    from ser_keras.metrics import summarize
    from ser_keras.rundir import RunDir

    run = RunDir(run_dir)
    names = [name for name in run.fold_names() if run.fold(name).done()]
    if not names:
        raise SystemExit(f"bench/litert.py: error: {run_dir}: no finished fold")
    scores = {q: {"p": [], "bytes": []} for q in quantizations}
    reference = []
    for name in names:
        table = pd.read_csv(run.fold(name).serving_predictions)
        reference.append(table)
        graph = ServingGraph(load_fold(run_dir, name), fused=False)
        waves = [load_audio(path, graph.params.sample_rate) for path in table["path"]]
        for quantize in quantizations:
            with tempfile.TemporaryDirectory() as tmp:
                meta = write_litert(graph, tmp, quantize)
                model = LiteRTModel(pathlib.Path(tmp) / meta["file"])
                scores[quantize]["p"].append(np.array([model.serve(w)["probabilities"] for w in waves]))
                scores[quantize]["bytes"].append(meta["bytes"])
        print(f"  fold {name}: {len(waves)} recordings", flush=True)
    table = pd.concat(reference, ignore_index=True)
    labels = [c[2:] for c in table.columns if c.startswith("p_")]
    index = {label: i for i, label in enumerate(labels)}
    truth = table["label"].map(index).to_numpy()
    in_process = table[[f"p_{label}" for label in labels]].to_numpy()
    rows = []
    for quantize in quantizations:
        p = np.concatenate(scores[quantize]["p"])
        summary = summarize(truth, p.argmax(axis=1), labels)
        rows.append({"quantize": quantize, "wa": summary["wa"], "ua": summary["ua"], "n": summary["n"],
                     "mb": float(np.mean(scores[quantize]["bytes"])) / 1e6,
                     "labels_differ": int(np.sum(p.argmax(axis=1) != in_process.argmax(axis=1))),
                     "max_dp": float(np.abs(p - in_process).max())})
    single = summarize(truth, in_process.argmax(axis=1), labels)
    rows.append({"quantize": "in-process (fit's single)", "wa": single["wa"], "ua": single["ua"], "n": single["n"]})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=pathlib.Path, help="export directory (float32 LiteRT)")
    parser.add_argument("--run", type=pathlib.Path,
                        help="a finished fit run: single-recording accuracy per quantisation")
    parser.add_argument("--quantize", default="none,float16,int8", help="with --run: the quantisations")
    parser.add_argument("--quantized", nargs="*", type=pathlib.Path, default=[],
                        help="exports of the same run with --quantize float16 / int8")
    parser.add_argument("--files", type=int, default=100, help="EMO-DB recordings (0: all)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--speed-only", action="store_true",
                        help="only LiteRT's speed and this process's peak RSS, as one JSON line, without "
                             "importing TensorFlow (bench/inference.py runs it in a fresh process)")
    args = parser.parse_args(argv)
    if args.run is not None:
        rows = run_accuracy(args.run, [q.strip() for q in args.quantize.split(",") if q.strip()])
        print(f"\n{args.run}: every fold's test recordings, one at a time through model.tflite")
        print(f"{'model':<26} {'WA %':>6} {'UA %':>6} {'n':>5} {'MB':>6} {'labels differ':>14} {'max |dp|':>9}")
        for row in rows:
            extra = (f"{row['mb']:>6.2f} {row['labels_differ']:>14} {row['max_dp']:>9.2e}" if "mb" in row else "")
            print(f"{row['quantize']:<26} {100 * row['wa']:>6.1f} {100 * row['ua']:>6.1f} {row['n']:>5} {extra}")
        return 0
    if args.model is None:
        parser.error("give --model EXPORT_DIR or --run RUN_DIR")
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
        print(f"parity with the SavedModel on {len(files)} EMO-DB recordings: "
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
