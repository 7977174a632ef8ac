"""Feature front-end throughput, in x real time (seconds of audio per second of compute).

    python bench/features.py --corpus casia --data-dir ../shared/corpora/casia [--limit N]

Prints, one per line:

- decode + resample alone (one core);
- the spectrogram front end: decode + resample + log spectrogram (one core);
- the full LLD set: decode + resample + F0/voicing, formants, energy, ZCR, MFCC (one core);
- ``extract_features`` into an empty cache (worker processes on all cores where it pays);
- cached reads through ``extract_features`` (every file a hit) for spectrogram and LLDs;
- peak resident memory (max RSS) of this process.

"One core" runs in this process with BLAS limited to one thread. Each figure is wall-clock
based; the CPU-time figure next to it is what the same code achieves on an idle core, which
is the fairer number when other jobs share the machine. Targets (2-core machine):
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
from ser_keras.features import llds, spectrogram  # noqa: E402
from ser_keras.features.extract import (  # noqa: E402
    MIN_FILES_FOR_POOL, MIN_FILES_FOR_POOL_BY_KIND, extract_features, resolve_jobs)


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
    parser.add_argument("--jobs", type=int, default=0, help="workers for the parallel extraction (0 = all cores)")
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

    features = config.features
    with threadpool_limits(1):
        load_audio(paths[0], sr)  # warm up imports and caches
        spectrogram.log_spectrogram(load_audio(paths[0], sr), features, sr)
        llds.frame_llds(load_audio(paths[0], sr), features, sr)

        speed, cpu, wall, _ = timed(lambda ps: [load_audio(p, sr) for p in ps], paths, audio_seconds)
        line("decode + resample (1 core)", speed, cpu, wall)
        speed, cpu, wall, _ = timed(
            lambda ps: [spectrogram.log_spectrogram(load_audio(p, sr), features, sr) for p in ps], paths, audio_seconds)
        line("spectrogram front end: decode + resample + log spectrogram (1 core)", speed, cpu, wall, "  [target 500x]")
        speed, cpu, wall, _ = timed(
            lambda ps: [llds.frame_llds(load_audio(p, sr), features, sr) for p in ps], paths, audio_seconds)
        line("full LLD set: decode + resample + F0, formants, energy, ZCR, MFCC (1 core)", speed, cpu, wall,
             "  [target 50x]")

    jobs = resolve_jobs(args.jobs, config)
    with tempfile.TemporaryDirectory(prefix="ser_keras_bench_cache_") as cache_dir:
        for kind in ("spectrogram", "lld"):
            speed, _, wall, result = timed(
                lambda ps: extract_features(ps, kind, config, cache_dir=cache_dir, n_jobs=jobs), paths, audio_seconds)
            failed = f", {len(result.failures)} failed" if result.failures else ""
            pooled = len(paths) >= MIN_FILES_FOR_POOL_BY_KIND.get(kind, MIN_FILES_FOR_POOL) and jobs > 1
            how = (f"{jobs} worker processes, incl. their start-up" if pooled
                   else "in-process: too few files for workers")
            line(f"extract_features {kind} into an empty cache ({how}; cache writes included)",
                 speed, None, wall, failed)
        for kind in ("spectrogram", "lld"):
            extract_features(paths, kind, config, cache_dir=cache_dir, n_jobs=1)  # warm the page cache
            speed, cpu, wall, result = timed(
                lambda ps: extract_features(ps, kind, config, cache_dir=cache_dir, n_jobs=1), paths, audio_seconds)
            megabytes = sum(f.nbytes for f in result.features if f is not None) / 2**20
            line(f"cached read, {kind} ({megabytes:.0f} MiB)", speed, cpu, wall, "  [target 5000x]")

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # (the extraction workers are children of the forkserver, which getrusage does not see)
    print(f"peak memory (max RSS of this process): {own:.0f} MiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
