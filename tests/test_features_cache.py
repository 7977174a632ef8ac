"""Feature cache (keys, atomic entries, corruption) and parallel extraction with failures."""

import dataclasses
import os

import numpy as np
import pandas as pd
import pytest
import soundfile

from ser_keras.config import Config, FeatureConfig
from ser_keras.errors import AudioError
from ser_keras.features import cache as cache_module
from ser_keras.features import frontend_ops, llds, spectrogram
from ser_keras.features.cache import FeatureCache, file_identity
from ser_keras.features.extract import Extraction, extract_features

SR = 16000


def write_wav(path, seconds=0.5, f0=150.0, sr=SR, seed=0):
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    soundfile.write(str(path), x.astype(np.float32), sr, subtype="PCM_16")
    return str(path)


@pytest.fixture
def wavs(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    return [write_wav(folder / f"u{i:02d}.wav", seconds=0.3 + 0.05 * i, f0=120 + 10 * i, seed=i) for i in range(10)]


@pytest.fixture
def config():
    config = Config()
    config.data.corpus = "synthetic"
    return config


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 + 0.01
    if isinstance(value, str):
        return "neutral_global" if value != "neutral_global" else "none"
    if value is None:
        return 100
    if isinstance(value, list):
        return value + [1.1]
    raise AssertionError(f"no change rule for {value!r}")


# ------------------------------------------------------------------------------- keys


@pytest.mark.parametrize("kind", ["spectrogram", "lld", "functionals"])
def test_key_changes_with_every_shaping_field(tmp_path, kind):
    base = FeatureConfig()
    key = FeatureCache(tmp_path, "emodb", kind, base, SR).key
    by_kind = cache_module.LLD_ONLY if kind == "spectrogram" else cache_module.SPECTROGRAM_ONLY
    ignored = cache_module.NOT_SHAPING | by_kind
    for field in dataclasses.fields(FeatureConfig):
        changed = dataclasses.replace(base, **{field.name: _changed(getattr(base, field.name))})
        other = FeatureCache(tmp_path, "emodb", kind, changed, SR).key
        if field.name in ignored:
            assert other == key, field.name
        else:
            assert other != key, f"changing features.{field.name} must change the {kind} cache key"
    assert FeatureCache(tmp_path, "emodb", kind, base, 8000).key != key
    assert FeatureCache(tmp_path, "casia", kind, base, SR).key != key


def test_key_covers_version_and_kind(tmp_path, monkeypatch):
    base = FeatureConfig()
    key = FeatureCache(tmp_path, "emodb", "lld", base, SR).key
    assert FeatureCache(tmp_path, "emodb", "functionals", base, SR).key != key
    monkeypatch.setattr(cache_module, "__version__", "999.0")
    assert FeatureCache(tmp_path, "emodb", "lld", base, SR).key != key


def test_spectrogram_fields_shape_the_spectrogram_key(tmp_path):
    for name in ("frame_ms", "hop_ms", "n_fft", "n_bins", "log_floor"):
        assert name not in cache_module.NOT_SHAPING | cache_module.LLD_ONLY


# ---------------------------------------------------------------------------- entries


def test_round_trip_and_file_identity(tmp_path, wavs):
    cache = FeatureCache(tmp_path / "c", "synthetic", "spectrogram", FeatureConfig(), SR)
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert cache.get(wavs[0]) is None
    cache.put(wavs[0], array)
    got = cache.get(wavs[0])
    np.testing.assert_array_equal(got, array)
    assert got.dtype == np.float32 and got.flags.writeable
    assert (cache.directory / "meta.json").is_file()
    # A changed audio file (new mtime) is a miss.
    stat = os.stat(wavs[0])
    os.utime(wavs[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.get(wavs[0]) is None
    assert cache.get(str(tmp_path / "missing.wav")) is None


@pytest.mark.parametrize("damage", ["truncate", "garbage_middle", "garbage_all", "empty", "header"])
def test_damaged_entry_is_a_miss(tmp_path, wavs, damage):
    cache = FeatureCache(tmp_path / "c", "synthetic", "spectrogram", FeatureConfig(), SR)
    entry = cache.put(wavs[0], np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32))
    raw = bytearray(entry.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "garbage_middle":
        raw[len(raw) - 300:len(raw) - 200] = os.urandom(100)
    elif damage == "garbage_all":
        raw = bytearray(os.urandom(len(raw)))
    elif damage == "empty":
        raw = bytearray()
    else:
        raw[12:20] = b"\xff" * 8
    entry.write_bytes(bytes(raw))
    assert cache.get(wavs[0]) is None


def test_torn_write_is_recomputed_by_extraction(tmp_path, wavs, config):
    root = tmp_path / "cache"
    first = extract_features(wavs[:3], "spectrogram", config, cache_dir=root)
    cache = FeatureCache(root, "synthetic", "spectrogram", config.features, SR)
    entry = cache.entry_path(file_identity(wavs[1]))
    entry.write_bytes(entry.read_bytes()[:100])  # a torn / truncated entry
    second = extract_features(wavs[:3], "spectrogram", config, cache_dir=root)
    for a, b in zip(first.features, second.features):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(cache.get(wavs[1]), first.features[1])  # rewritten, valid again


def test_killed_writer_leaves_only_ignored_temp_files(tmp_path, wavs, monkeypatch):
    cache = FeatureCache(tmp_path / "c", "synthetic", "lld", FeatureConfig(), SR)

    class Killed(BaseException):
        pass

    original = os.replace

    def killed_before_rename(src, dst):
        raise Killed()

    monkeypatch.setattr(cache_module.os, "replace", killed_before_rename)
    with pytest.raises(Killed):
        cache.put(wavs[0], np.ones((4, 4), np.float32))
    monkeypatch.setattr(cache_module.os, "replace", original)
    assert cache.get(wavs[0]) is None
    # A temp file of a hard-killed process (no cleanup) is never read and is swept when old.
    stray = cache.directory / "deadbeef.x.tmp"
    stray.write_bytes(b"partial")
    os.utime(stray, (0, 0))
    assert cache.get(wavs[0]) is None
    assert cache.sweep_temporary(older_than_s=60) == 1 and not stray.exists()


# ------------------------------------------------------------------------- extraction


def test_extraction_matches_direct_computation_and_hits_the_cache(tmp_path, wavs, config, monkeypatch):
    from ser_keras.audio import load_audio

    root = tmp_path / "cache"
    lld_params = frontend_ops.params_for(config.features, SR, "lld")
    result = extract_features(pd.DataFrame({"path": wavs[:4]}), "lld", config, cache_dir=root)
    assert isinstance(result, Extraction) and result.failures == {}
    for path, array in zip(wavs[:4], result.features):
        np.testing.assert_array_equal(array, frontend_ops.raw_features(load_audio(path), lld_params))

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cache hit must not decode audio")

    monkeypatch.setattr("ser_keras.audio.load_audio", no_decoding)
    again = extract_features(wavs[:4], "lld", config, cache_dir=root)
    for a, b in zip(result.features, again.features):
        np.testing.assert_array_equal(a, b)


def test_changed_feature_parameter_misses_the_cache(tmp_path, wavs, config):
    root = tmp_path / "cache"
    base = extract_features(wavs[:2], "spectrogram", config, cache_dir=root)
    assert base.features[0].shape[1] == 256
    config.features.n_bins = 128
    smaller = extract_features(wavs[:2], "spectrogram", config, cache_dir=root)
    assert smaller.features[0].shape[1] == 128
    np.testing.assert_allclose(smaller.features[0], base.features[0][:, :128])
    config.features.n_bins = 256
    config.features.log_floor = 1.0
    floored = extract_features(wavs[:2], "spectrogram", config, cache_dir=root)
    assert floored.features[0].min() >= 0.0 > base.features[0].min()
    assert len([d for d in root.iterdir() if d.is_dir()]) == 3


def test_functionals_cache_the_llds_on_the_way(tmp_path, wavs, config):
    root = tmp_path / "cache"
    result = extract_features(wavs[:2], "functionals", config, cache_dir=root)
    assert result.features[0].shape == (len(llds.functional_names(config.features)),)
    lld_cache = FeatureCache(root, "synthetic", "lld", config.features, SR)
    stored = lld_cache.get(wavs[0])
    assert stored is not None
    np.testing.assert_array_equal(llds.functionals(stored, config.features), result.features[0])


def test_extraction_reports_bad_files_and_keeps_the_others(tmp_path, wavs, config, capsys):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" + os.urandom(200))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    missing = str(tmp_path / "missing.wav")
    paths = wavs[:5] + [str(corrupt)] + wavs[5:] + [str(empty), missing, wavs[0]]
    result = extract_features(pd.DataFrame({"path": paths}), "spectrogram", config, cache_dir=tmp_path / "cache")
    assert set(result.failures) == {str(corrupt), str(empty), missing}
    for path, message in result.failures.items():
        assert path in message and "\n" not in message
    assert "empty" in result.failures[str(empty)] and "no such file" in result.failures[missing]
    assert [f is None for f in result.features] == [p in result.failures for p in paths]
    assert result.ok().sum() == len(paths) - 3
    for path, array in zip(paths, result.features):
        if array is not None:
            n = soundfile.info(path).frames
            assert array.shape == (spectrogram.frame_count(n, config.features, SR), 256)
    np.testing.assert_array_equal(result.features[0], result.features[-1])  # duplicate row
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""  # silent unless progress=True
    # Without the cache: the same arrays.
    uncached = extract_features(paths, "spectrogram", config, cache_dir=False)
    assert uncached.failures.keys() == result.failures.keys()
    for a, b in zip(result.features, uncached.features):
        assert (a is None and b is None) or np.array_equal(a, b)


def test_progress_bar_goes_to_stderr(tmp_path, wavs, config, capsys):
    extract_features(wavs[:2], "spectrogram", config, cache_dir=False, progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "spectrogram features" in captured.err


def test_resampled_input(tmp_path, config):
    path = write_wav(tmp_path / "hi.wav", seconds=1.0, sr=22050)
    result = extract_features([path], "spectrogram", config, cache_dir=False)
    assert result.features[0].shape == (99, 256)


def test_unknown_kind(config):
    with pytest.raises(Exception, match="feature kind"):
        extract_features(["x.wav"], "mel", config)


def test_audio_error_message_is_the_loaders(tmp_path, config):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is text")
    result = extract_features([str(bad)], "lld", config, cache_dir=False)
    with pytest.raises(AudioError) as info:
        from ser_keras.audio import load_audio

        load_audio(bad)
    assert result.failures[str(bad)] == str(info.value)


def test_cleared_cache_directory_is_recreated(tmp_path, wavs):
    import shutil

    cache = FeatureCache(tmp_path / "c", "synthetic", "lld", FeatureConfig(), SR)
    cache.put(wavs[0], np.ones((2, 2), np.float32))
    shutil.rmtree(tmp_path / "c")
    cache.put(wavs[0], np.zeros((2, 2), np.float32))
    np.testing.assert_array_equal(cache.get(wavs[0]), np.zeros((2, 2), np.float32))


def test_get_many_reads_hits_into_one_block(tmp_path, wavs):
    cache = FeatureCache(tmp_path / "c", "synthetic", "spectrogram", FeatureConfig(), SR)
    arrays = [np.random.default_rng(i).standard_normal((5 + i, 3)).astype(np.float32) for i in range(4)]
    for path, array in zip(wavs, arrays):
        cache.put(path, array)
    entry = cache.entry_path(file_identity(wavs[2]))
    entry.write_bytes(entry.read_bytes()[:-4])  # damaged -> miss
    got = cache.get_many(wavs[:5] + [str(tmp_path / "missing.wav")])
    assert [g is None for g in got] == [False, False, True, False, True, True]
    for i in (0, 1, 3):
        np.testing.assert_array_equal(got[i], arrays[i])
        assert got[i].ctypes.data % 64 == 0 and got[i].flags.writeable
    got[0][:] = 0  # views of one block, but never overlapping
    np.testing.assert_array_equal(got[1], arrays[1])
