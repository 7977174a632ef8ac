"""One front end: the features a training run caches and reads are what the export graph
computes from the same file.

A real run of the default experiment on the demo corpus (``trained_demo_run``: level
normalisation and pitch channels as shipped) leaves its raw features in the feature cache.
For the same files, (1) what training reads (the cached arrays, level-normalised, pitch
appended: ``extract_for_model``) through the fold's fitted front end as a served recording is
normalised (with the test-time views) equals the export graph's front end
(``features.frontend_ops.tf_frontend`` with the export's parameters, as
``export.graph.ServingGraph`` traces it) within 1e-5, and (2) the
saved export's ``speaker_statistics`` of a file equal the moments of its cached raw features.
"""

import numpy as np
import pytest
import tensorflow as tf

ATOL = 1e-5


@pytest.fixture(scope="module")
def run_and_files(trained_demo_run):
    from ser_keras.rundir import load_run_config
    from ser_keras.corpora import load_manifest

    config, _ = load_run_config(trained_demo_run)
    manifest = load_manifest(config.data.corpus, None, config.data)
    return trained_demo_run, config, manifest.iloc[::max(1, len(manifest) // 6)][:6].reset_index(drop=True)


def test_cached_features_equal_the_export_front_end(run_and_files):
    from ser_keras.audio import load_audio
    from ser_keras.features import frontend_ops
    from ser_keras.features.cache import FeatureCache
    from ser_keras.features.extract import default_cache_dir, extract_for_model
    from ser_keras.features.frontend import FittedFrontEnd, uses_pca
    from ser_keras.inference.fold import load_fold
    from ser_keras.rundir import RunDir

    run_dir, config, files = run_and_files
    assert config.features.level_normalization and config.features.pitch_channels  # the shipped front end
    cache = FeatureCache(default_cache_dir(config), config.data.corpus, "spectrogram", config.features,
                         config.data.sample_rate)
    assert all(cache.get(path) is not None for path in files["path"]), "fit cached every file"
    trained, failures = extract_for_model(config, files, progress=False)
    assert not failures
    bundle = load_fold(run_dir)
    front_end = FittedFrontEnd.load(RunDir(run_dir).fold(bundle.fold), uses_pca(config))
    # As served: pooled statistics, the test-time views side by side (the plain one first).
    views = front_end.transform_views(trained, None, config.features)
    expected = [np.concatenate(parts, axis=1) for parts in zip(*views)]
    graph = tf.function(lambda x: frontend_ops.tf_frontend(x, bundle.params, per_row=True),
                        input_signature=[tf.TensorSpec([None, None], tf.float32)])
    for path, want in zip(files["path"], expected):
        got = graph(load_audio(path, config.data.sample_rate)[None]).numpy()[0]
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= ATOL, path


def test_export_speaker_statistics_equal_the_cached_moments(run_and_files, trained_export):
    from ser_keras.audio import load_audio
    from ser_keras.features.extract import extract_for_model

    run_dir, config, files = run_and_files
    loaded = tf.saved_model.load(str(trained_export))
    trained, _ = extract_for_model(config, files.iloc[:2], progress=False)
    for path, raw in zip(files["path"][:2], trained):
        waveform = load_audio(path, config.data.sample_rate)
        out = loaded.speaker_statistics(waveform[None], np.array([len(waveform)], np.int32))
        assert int(out["speech"].numpy()[0]) == 1
        assert float(out["frames"]) == raw.shape[0]
        np.testing.assert_allclose(out["sum"].numpy() / raw.shape[0], raw.astype(np.float64).mean(axis=0),
                                   atol=ATOL)
