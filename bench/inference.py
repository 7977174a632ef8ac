"""Inference speed of exported SavedModels on this machine, side by side (issue #6, #30).

    python bench/inference.py                               # the default's and exp4's demo exports
    python bench/inference.py --model A --model B [--seconds 1,10] [--batches 1,32]

Without ``--model`` it takes the demo runs ``runs/demo_<experiment>_loso`` of the default
experiment and of exp4 (``ser-keras fit --corpus demo`` trains one that is missing, a few
minutes each) and exports both into ``--work-dir`` (``ser-keras export``), so the figures are
those of the code checked out.

For every (clip length, batch size) it calls each model's ``serve`` endpoint once (the first
call, timed separately: with an XLA export it includes the compilation for that input shape)
and once more to warm up, then times the models in turns - one call of each per round - so
that a load that comes and goes on a shared machine slows all of them alike, and reports
per model the median of its timed calls as

    x real-time = (batch * clip seconds) / median wall seconds per call

and the ratio of each model's speed to the last model's (the median of the per-round
ratios: the figure that holds on a noisy machine). Then, per model, the serving graph's time
split by stage from a ``tf.profiler`` trace of a few calls (``stage_split``): ``functionals``
(ops under the ``functionals`` name scope of ``features.functionals``: the wide functionals the
fused classifier reads, their own pitch track included), ``pitch`` (ops under the ``pitch`` name
scope of ``features.pitch``: the network's pitch channels), ``network`` (ops under the Keras model's
or one of its layers' names, and fused LSTM kernels) and ``front end`` (everything else:
spectrogram, level, statistics, PCA, speech flags, input checks); the milliseconds shown are
each stage's share of the median call. Then each export's size on disk by part, and its
``model.tflite`` beside the SavedModel on a 10 s clip at batch 1: x real time and peak resident
memory, LiteRT in a fresh process that never imports TensorFlow (``bench/litert.py --speed-only``).

Only TensorFlow and NumPy are imported for the timing - the same as serving.

Targets (issues #6 and #30): the default's export >= 500x real time on a 10 s clip at batch 1
on the 2-core CPU machine, >= 0.8 of exp4's speed in the same run, <= 5 MB on disk.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
TARGET_X = 500.0
TARGET_RATIO = 0.8
TARGET_MB = 5.0
STAGES = ("front end", "pitch", "functionals", "network")
# Ops that only call other ops (their time is that of the ops inside them).
CALL_OPS = {"StatefulPartitionedCall", "PartitionedCall", "If", "StatelessIf", "While", "StatelessWhile",
            "Case", "StatelessCase"}
# A trace event of an op is "<op name>:<op type>"; others ("ExecutorState::Process") are not ops.
OP_EVENT = re.compile(r"([\w.\-/]+):(\w+)")
FUSED_RNN_OPS = {"BlockLSTM", "BlockLSTMV2", "CudnnRNN", "CudnnRNNV2", "CudnnRNNV3", "LSTMBlockCell"}


def _size_mb(path: pathlib.Path, include=None) -> float:
    files = [p for p in path.rglob("*") if p.is_file()]
    if include is not None:
        files = [p for p in files if include(p.relative_to(path))]
    return sum(p.stat().st_size for p in files) / 1e6


def _size_parts(path: pathlib.Path) -> str:
    """'saved_model.pb 2.23, variables 1.62, model.keras 1.70, ...' (MB)."""
    parts = collections.Counter()
    for p in path.rglob("*"):
        if p.is_file():
            parts[p.relative_to(path).parts[0]] += p.stat().st_size / 1e6
    return ", ".join(f"{name} {mb:.2f}" for name, mb in parts.most_common() if mb >= 0.005)


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1e6 if sys.platform == "darwin" else 1e3)


def _signal(np, samples: int, batch: int, rate: int):
    """Speech-like input (harmonics with vibrato and noise); the cost does not depend on it."""
    rng = np.random.default_rng(0)
    t = np.arange(samples) / rate
    phase = 2 * np.pi * np.cumsum(180 * (1 + 0.1 * np.sin(2 * np.pi * 4 * t))) / rate
    x = sum(np.sin(h * phase) / h for h in range(1, 8)) * 0.1
    rows = [np.roll(x, 97 * i) + 0.005 * rng.normal(size=samples) for i in range(batch)]
    return np.asarray(rows, dtype=np.float32)


# -- the exports ------------------------------------------------------------------------------


def _cli(*args) -> None:
    command = [sys.executable, "-m", "ser_keras.cli", *args]
    print("$ ser-keras " + " ".join(args), flush=True)
    if subprocess.run(command, cwd=REPO).returncode != 0:
        raise SystemExit(f"bench/inference.py: 'ser-keras {' '.join(args)}' failed")


def demo_exports(work_dir: pathlib.Path) -> list:
    """The default experiment's and exp4's demo runs, exported now into `work_dir`."""
    sys.path.insert(0, str(REPO))
    from ser_keras.config import DEFAULT_EXPERIMENT

    exports = []
    for experiment in dict.fromkeys([DEFAULT_EXPERIMENT, "exp4"]):
        run_dir = REPO / "runs" / f"demo_{experiment}_loso"
        if not run_dir.is_dir():
            _cli("fit", "--corpus", "demo", "--experiment", experiment, "--run-dir", str(run_dir), "--quiet")
        out = work_dir / f"demo_{experiment}"
        _cli("export", str(run_dir), "--out", str(out))
        exports.append(out)
    return exports


class Model:
    """One export: its ``serve`` endpoint, metadata, and the names its network's ops carry."""

    def __init__(self, tf, path: pathlib.Path):
        meta_path = path / "export.json"
        self.meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if self.meta.get("input", "waveform") != "waveform":
            raise SystemExit(f"{path}: an exp2 export takes LLD features, not a waveform; "
                             "this benchmark times waveform exports (exp3 and later)")
        self.path = path
        t0 = time.perf_counter()
        self.loaded = tf.saved_model.load(str(path))
        self.load_s = time.perf_counter() - t0
        self.rate = int(self.loaded.signatures["metadata"]()["sample_rate"])
        self.name = f"{self.meta.get('experiment', '?')}:{path.name}"
        self.network_names = _network_names(path)

    def call(self, x):
        return self.loaded.serve(x)["probabilities"].numpy()


def _network_names(path: pathlib.Path) -> set:
    """The Keras model's name and its layers' names (from the export's model.keras)."""
    try:
        with zipfile.ZipFile(path / "model.keras") as archive:
            config = json.loads(archive.read("config.json"))["config"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return set()
    return {config.get("name", "")} | {layer["config"]["name"] for layer in config.get("layers", [])} - {""}


def stage_of(op_name: str, op_type: str, network_names: set) -> str:
    """'functionals', 'pitch', 'network' or 'front end' for an op of the serving graph (see the docstring)."""
    scopes = op_name.split("/")[:-1]
    if "functionals" in scopes:
        return "functionals"
    if "pitch" in scopes:
        return "pitch"
    if op_type in FUSED_RNN_OPS:
        return "network"
    for scope in scopes:
        # Keras names a layer's ops "<layer>/..." or "<layer>_<n>/...", a wrapper model "<model>_...";
        # the front end's TensorFlow ops are CamelCase ("Pad", "Cumsum") or under other scopes.
        if any(scope == name or scope.startswith(name + "_") for name in network_names):
            return "network"
    return "front end"


def stage_split(tf, model: Model, x, calls: int = 3) -> dict:
    """{stage: share of the wall time} of `calls` calls of ``serve`` on `x`, from a profiler
    trace: every instant in which ops run is shared among the stages of the ops running then,
    and a short pause between ops (the executor's own work, which dominates a loop of small
    ops such as a Keras LSTM's) goes to the stage of the op that starts after it."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(calls):
                model.call(x)
        finally:
            tf.profiler.experimental.stop()
        traces = list(pathlib.Path(logdir).rglob("*.xplane.pb"))
        space = xplane_pb2.XSpace()
        space.ParseFromString(traces[0].read_bytes())
    intervals = []  # (start ps, end ps, stage)
    for plane in space.planes:
        names = {key: value.name for key, value in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                match = OP_EVENT.fullmatch(names.get(event.metadata_id, ""))
                if match and match.group(2) not in CALL_OPS:
                    op_name, op_type = match.groups()
                    start = line.timestamp_ns * 1000 + event.offset_ps
                    stage = stage_of(op_name, op_type, model.network_names)
                    intervals.append((start, start + event.duration_ps, stage))
    return _sweep(intervals)


def _sweep(intervals: list, max_gap_ps: int = 10 ** 9) -> dict:
    """Wall time per stage from op intervals (see ``stage_split``); gaps over `max_gap_ps`
    (between calls) count for nobody."""
    totals = collections.Counter()
    boundaries = sorted({t for start, end, _ in intervals for t in (start, end)})
    starts = sorted((start, stage) for start, _, stage in intervals)
    events = sorted([(start, 1, stage) for start, _, stage in intervals]
                    + [(end, -1, stage) for _, end, stage in intervals])
    active = collections.Counter()
    k = n = 0
    for left, right in zip(boundaries, boundaries[1:]):
        while k < len(events) and events[k][0] <= left:
            active[events[k][2]] += events[k][1]
            k += 1
        running = [stage for stage, count in active.items() if count > 0]
        if running:
            for stage in running:
                totals[stage] += (right - left) / len(running)
        elif right - left <= max_gap_ps:
            while n < len(starts) and starts[n][0] < right:
                n += 1
            if n < len(starts):
                totals[starts[n][1]] += right - left
    whole = sum(totals.values()) or 1
    return {stage: totals[stage] / whole for stage in STAGES}


# -- timing -----------------------------------------------------------------------------------


def time_case(np, tf, models: list, clip_s: float, batch: int, min_repeats: int, min_time: float) -> list:
    """Per model: (first call s, timed call seconds); the models take turns, one call a round."""
    x = tf.constant(_signal(np, int(round(clip_s * models[0].rate)), batch, models[0].rate))
    firsts = []
    for model in models:
        t0 = time.perf_counter()
        model.call(x)
        firsts.append(time.perf_counter() - t0)
        model.call(x)  # warm-up
    times = [[] for _ in models]
    started = time.perf_counter()
    while len(times[0]) < min_repeats or (time.perf_counter() - started < min_time and len(times[0]) < 200):
        for model, own in zip(models, times):
            t0 = time.perf_counter()
            model.call(x)
            own.append(time.perf_counter() - t0)
    return x, firsts, times


def bench(paths: list, seconds: list, batches: list, min_repeats: int, min_time: float,
          split: bool = True) -> list:
    import numpy as np
    import tensorflow as tf

    models = [Model(tf, path) for path in paths]
    if len({m.rate for m in models}) > 1:
        raise SystemExit("bench/inference.py: the models take different sample rates; time them one by one")
    print(f"machine    {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"TensorFlow {tf.__version__}")
    for i, model in enumerate(models, 1):
        meta = model.meta
        print(f"model {i}    {model.path} ({meta.get('experiment', '?')}, fold {meta.get('fold', '?')}, "
              f"XLA {'on' if meta.get('jit_compile') else 'off'}); loaded in {model.load_s:.2f} s")
    print(f"peak RSS after loading: {_peak_rss_mb():.0f} MB")
    names = [f"model {i}" for i in range(1, len(models) + 1)]
    print()
    header = (f"{'clip':>6} {'batch':>5} {'model':>8} {'first call':>11} {'median':>10} {'x real-time':>12} "
              f"{'vs model ' + str(len(models)):>11} {'repeats':>7} {'peak RSS':>9}")
    print(header)
    print("-" * len(header))
    rows = []
    cases = sorted(((s, b) for s in seconds for b in batches), key=lambda c: c[0] * c[1])
    for clip_s, batch in cases:
        x, firsts, times = time_case(np, tf, models, clip_s, batch, min_repeats, min_time)
        rounds = list(zip(*times))
        for i, (model, first, own) in enumerate(zip(models, firsts, times)):
            median = statistics.median(own)
            ratio = statistics.median(r[-1] / r[i] for r in rounds)  # speed over the last model's
            row = {"model": str(model.path), "experiment": model.meta.get("experiment"), "clip_s": clip_s,
                   "batch": batch, "first_call_s": first, "median_s": median,
                   "x_real_time": clip_s * batch / median, "speed_vs_last": ratio, "repeats": len(own),
                   "peak_rss_mb": _peak_rss_mb()}
            rows.append(row)
            print(f"{clip_s:>5g}s {batch:>5d} {names[i]:>8} {first:>10.3f}s {median * 1000:>8.2f}ms "
                  f"{row['x_real_time']:>11.0f}x {ratio:>10.2f}x {len(own):>7d} {row['peak_rss_mb']:>7.0f}MB",
                  flush=True)
        if split:
            for i, model in enumerate(models):
                shares = stage_split(tf, model, x)
                median = next(r["median_s"] for r in rows if r["model"] == str(model.path)
                              and r["clip_s"] == clip_s and r["batch"] == batch)
                text = ", ".join(f"{stage} {100 * shares[stage]:.0f} % ({shares[stage] * median * 1000:.1f} ms)"
                                 for stage in STAGES)
                print(f"{'':>12} {names[i]:>8} split: {text}")
                rows[-len(models) + i]["split"] = shares
    print()
    for i, model in enumerate(models):
        saved = _size_mb(model.path, lambda p: p.parts[0] in ("saved_model.pb", "variables", "assets",
                                                              "fingerprint.pb"))
        print(f"{names[i]} export {_size_mb(model.path):.2f} MB on disk (SavedModel alone {saved:.2f} MB): "
              f"{_size_parts(model.path)}")
    return rows


def litert_side_by_side(rows: list, paths: list, seconds: float = 10.0) -> None:
    """Each export's model.tflite beside its SavedModel on a `seconds` clip at batch 1: x real
    time and peak resident memory, LiteRT timed in a fresh process that never imports
    TensorFlow (bench/litert.py --speed-only), as it is served without TensorFlow."""
    for index, path in enumerate(paths, 1):
        if not (path / "model.tflite").is_file():
            continue
        done = subprocess.run([sys.executable, str(REPO / "bench" / "litert.py"), "--model", str(path),
                               "--seconds", str(seconds), "--speed-only"], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"model {index} LiteRT: failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        lite = json.loads(done.stdout.strip().splitlines()[-1])
        saved = [r for r in rows if r["model"] == str(path) and r["clip_s"] == seconds and r["batch"] == 1]
        saved_text = (f"{saved[0]['x_real_time']:.0f}x, peak RSS {max(r['peak_rss_mb'] for r in rows):.0f} MB "
                      "(this process: TensorFlow and every model)" if saved else "not timed at this length")
        meta = json.loads((path / "export.json").read_text()) if (path / "export.json").is_file() else {}
        partial = meta.get("functionals") and not meta.get("litert", {}).get("functionals")  # before format 5
        network_only = " (the network only)" if partial else ""
        print(f"model {index} {seconds:g} s clip, batch 1: SavedModel {saved_text}; LiteRT{network_only} "
              f"{lite['litert_xrt']:.0f}x, peak RSS {lite['peak_rss_mb']:.0f} MB (a process without "
              f"TensorFlow{'' if not lite['tensorflow_imported'] else ': NOT so, TensorFlow was imported'})")


def verdict(rows: list, paths: list) -> None:
    """The targets, for the first model against the last."""
    first, last = str(paths[0]), str(paths[-1])
    ten = [r for r in rows if r["clip_s"] == 10 and r["batch"] == 1 and r["model"] == first]
    size = _size_mb(pathlib.Path(first))
    if ten:
        rt = ten[0]["x_real_time"]
        print(f"\ntarget >= {TARGET_X:.0f}x real-time on a 10 s clip at batch 1: {rt:.0f}x "
              f"({'met' if rt >= TARGET_X else 'NOT met'}) for model 1; export <= {TARGET_MB:g} MB: {size:.2f} MB "
              f"({'met' if size <= TARGET_MB else 'NOT met'})")
        shares = ten[0].get("split")
        if shares:
            budget = 10.0 / TARGET_X * 1000
            spent = {stage: shares[stage] * ten[0]["median_s"] * 1000 for stage in STAGES}
            print(f"the {TARGET_X:.0f}x budget of a 10 s clip is {budget:.0f} ms; model 1 spends "
                  + ", ".join(f"{stage} {ms:.1f}" for stage, ms in spent.items() if ms > 0)
                  + " ms (a stage over the budget alone rules the target out)")
        if first != last:
            ratio = ten[0]["speed_vs_last"]
            print(f"target >= {TARGET_RATIO}x the last model's speed in the same run: {ratio:.2f}x "
                  f"({'met' if ratio >= TARGET_RATIO else 'NOT met'})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[],
                        help="an export directory (ser-keras export ... --out DIR); repeat to compare, the "
                             "last one is the reference. Default: the default experiment's and exp4's "
                             "demo exports, made now")
    parser.add_argument("--work-dir", default=str(REPO / "runs" / "bench_exports"),
                        help="where the demo exports are written (without --model)")
    parser.add_argument("--seconds", default="1,10", help="clip lengths in seconds (comma separated)")
    parser.add_argument("--batches", default="1,32", help="batch sizes (comma separated)")
    parser.add_argument("--repeats", type=int, default=5, help="at least this many timed calls per case and model")
    parser.add_argument("--min-time", type=float, default=2.0, help="keep repeating until this many seconds")
    parser.add_argument("--no-split", action="store_true", help="skip the profile of the time per stage")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    paths = [pathlib.Path(m) for m in args.model]
    for path in paths:
        if not (path / "saved_model.pb").is_file():
            print(f"bench/inference.py: {path}: not a SavedModel directory (no saved_model.pb)", file=sys.stderr)
            return 2
    if not paths:
        paths = demo_exports(pathlib.Path(args.work_dir))
    seconds = [float(s) for s in args.seconds.split(",") if s]
    batches = [int(b) for b in args.batches.split(",") if b]
    rows = bench(paths, seconds, batches, args.repeats, args.min_time, split=not args.no_split)
    print()
    litert_side_by_side(rows, paths)
    verdict(rows, paths)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"(1-minute load average at the end: {load:.2f} on {os.cpu_count()} cores; other processes "
          "slow every figure above, the ratios much less)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
