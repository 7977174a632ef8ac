"""Feature front-end throughput, in x real time (seconds of audio per second of compute).

    python bench/features.py --corpus casia --data-dir ../shared/corpora/casia [--limit N]

Prints, one per line:

- decode + resample alone;
- the spectrogram front end: decode + resample + log spectrogram (``features.frontend_ops``);
- the full LLD set: decode + resample + F0/voicing, formants, energy, ZCR, MFCC;
- ``extract_features`` into an empty cache (in-process, cache writes included);
- cached reads through ``extract_features`` (every file a hit) for spectrogram and LLDs;
- peak resident memory (max RSS) of this process.

Everything runs in this process (BLAS limited to one thread; the front end's TensorFlow ops
use TensorFlow's thread pool). Each figure is wall-clock based; the CPU-time figure next to it
is what the same code achieves per core-second, the fairer number when other jobs share the
machine. Targets (2-core machine):
spectrogram >= 500x, LLDs >= 50x, cached read >= 5000x.
"""

from __future__ import annotations

import argparse
import pathlib
import resource
import sys
import tempfile
import time

from threadpoolctl import threadpool_limits

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ser_keras.audio import load_audio  # noqa: E402
from ser_keras.config import Config  # noqa: E402
from ser_keras.corpora import load_manifest  # noqa: E402
from ser_keras.features import frontend_ops  # noqa: E402
from ser_keras.features.extract import extract_features  # noqa: E402


def timed(function, paths, audio_seconds):
    """(x real time by wall clock, by CPU time, result) of function(paths)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(paths)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return audio_seconds / wall, audio_seconds / max(cpu, 1e-9), wall, result


def line(label, speed, cpu_speed, wall, note=""):
    extra = f", CPU-time {cpu_speed:,.0f}x" if cpu_speed is not None else ""
    print(f"{label}: {speed:,.0f}x real time ({wall:.2f} s wall{extra}){note}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--limit", type=int, default=None, help="use N files spread over the corpus")
    args = parser.parse_args(argv)

    config = Config()
    config.data.corpus = args.corpus
    config.runtime.data_dir = args.data_dir
    sr = config.data.sample_rate
    manifest = load_manifest(args.corpus, args.data_dir, config.data)
    manifest = manifest[manifest["duration"].notna()]
    if args.limit and args.limit < len(manifest):
        step = len(manifest) / args.limit
        manifest = manifest.iloc[[int(i * step) for i in range(args.limit)]]
    paths = list(manifest["path"])
    audio_seconds = float(manifest["duration"].sum())
    import soundfile

    source_rate = soundfile.info(paths[0]).samplerate
    print(f"corpus {args.corpus}: {len(paths)} files, {audio_seconds:.1f} s of audio, "
          f"{source_rate} Hz -> {sr} Hz{' (resampled)' if source_rate != sr else ''}", flush=True)

    spectrogram = frontend_ops.spectrogram_params(config.features, sr)
    lld = frontend_ops.params_for(config.features, sr, "lld")
    with threadpool_limits(1):
        load_audio(paths[0], sr)  # warm up imports and caches (and trace the front end's functions)
        frontend_ops.raw_features(load_audio(paths[0], sr), spectrogram)
        frontend_ops.raw_features(load_audio(paths[0], sr), lld)

        speed, cpu, wall, _ = timed(lambda ps: [load_audio(p, sr) for p in ps], paths, audio_seconds)
        line("decode + resample", speed, cpu, wall)
        speed, cpu, wall, _ = timed(
            lambda ps: [frontend_ops.raw_features(load_audio(p, sr), spectrogram) for p in ps], paths, audio_seconds)
        line("spectrogram front end: decode + resample + log spectrogram", speed, cpu, wall, "  [target 500x]")
        speed, cpu, wall, _ = timed(
            lambda ps: [frontend_ops.raw_features(load_audio(p, sr), lld) for p in ps], paths, audio_seconds)
        line("full LLD set: decode + resample + F0, formants, energy, ZCR, MFCC", speed, cpu, wall,
             "  [target 50x]")

    with tempfile.TemporaryDirectory(prefix="ser_keras_bench_cache_") as cache_dir:
        for kind in ("spectrogram", "lld"):
            speed, _, wall, result = timed(
                lambda ps: extract_features(ps, kind, config, cache_dir=cache_dir), paths, audio_seconds)
            failed = f", {len(result.failures)} failed" if result.failures else ""
            line(f"extract_features {kind} into an empty cache (cache writes included)", speed, None, wall, failed)
        for kind in ("spectrogram", "lld"):
            extract_features(paths, kind, config, cache_dir=cache_dir)  # warm the page cache
            speed, cpu, wall, result = timed(
                lambda ps: extract_features(ps, kind, config, cache_dir=cache_dir), paths, audio_seconds)
            megabytes = sum(f.nbytes for f in result.features if f is not None) / 2**20
            line(f"cached read, {kind} ({megabytes:.0f} MiB)", speed, cpu, wall, "  [target 5000x]")

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS of this process): {own:.0f} MiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
