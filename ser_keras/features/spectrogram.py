"""Log-power spectrogram, in TensorFlow ops: the front end of section 4.1 of the paper.

The paper draws a spectrogram with a 20 ms window, a 10 ms hop and a "256-point FFT".
At 16 kHz a 20 ms window is 320 samples, which a 256-point FFT cannot hold without
truncating the window (throwing away 64 samples, i.e. 4 ms of every frame). We therefore
zero-pad each 320-sample Hann-windowed frame to a 512-point FFT and keep the lowest 256
of its 257 bins (0 .. 7.97 kHz at 16 kHz, bin spacing 31.25 Hz): 256 dimensions, as in the
paper, from the whole window. Only the Nyquist bin is dropped. Zero padding interpolates
the spectrum; it adds no information but costs nothing in resolution either.

Definition (one implementation: extraction, training, ``predict`` and the export graph all
run these ops; the reference is ``librosa.stft``, tested):

- ``frame = round(frame_ms * sr / 1000)`` (320), ``hop = round(hop_ms * sr / 1000)`` (160);
- no centring: frame ``i`` covers samples ``[i * hop, i * hop + frame)``; a waveform shorter
  than one frame is zero-padded to one frame; ``frames = 1 + (n - frame) // hop``;
- periodic Hann window of length ``frame``, frame zero-padded at its end to ``n_fft`` points,
  power ``|rfft|**2`` (float32);
- the first ``n_bins`` bins, ``log(power + log_floor)``, float32.

The ops take ``params``: anything with ``frame``, ``hop``, ``n_fft``, ``n_bins`` and
``log_floor`` (``features.frontend_ops.FrontEndParams``).
"""

from __future__ import annotations

import functools

import numpy as np

from ser_keras.errors import SerKerasError


def frame_params(config, sample_rate: int) -> tuple:
    """(frame, hop) in samples for `config` (a FeatureConfig) at `sample_rate`."""
    frame = int(round(config.frame_ms * sample_rate / 1000.0))
    hop = int(round(config.hop_ms * sample_rate / 1000.0))
    if frame < 2:
        raise SerKerasError(f"features.frame_ms: {config.frame_ms} ms is less than two samples at {sample_rate} Hz")
    if hop < 1:
        raise SerKerasError(f"features.hop_ms: {config.hop_ms} ms is less than one sample at {sample_rate} Hz")
    return frame, hop


def frame_count(n_samples: int, config, sample_rate: int) -> int:
    """Number of frames the front end gives for `n_samples`."""
    frame, hop = frame_params(config, sample_rate)
    return 1 + (max(int(n_samples), frame) - frame) // hop


def check_fft(config, sample_rate: int) -> tuple:
    """(frame, hop) after checking n_fft and n_bins against the frame length."""
    frame, hop = frame_params(config, sample_rate)
    if config.n_fft < frame:
        raise SerKerasError(
            f"features.n_fft: {config.n_fft} is shorter than the {frame}-sample frame "
            f"({config.frame_ms} ms at {sample_rate} Hz); use n_fft >= {frame}"
        )
    if not 1 <= config.n_bins <= config.n_fft // 2 + 1:
        raise SerKerasError(
            f"features.n_bins: {config.n_bins} is not in 1..{config.n_fft // 2 + 1} for n_fft={config.n_fft}")
    return frame, hop


@functools.lru_cache(maxsize=16)
def hann_window(length: int) -> np.ndarray:
    """Periodic Hann window (the STFT convention), computed in float64 and rounded once."""
    n = np.arange(length, dtype=np.float64)
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)).astype(np.float32)
    window.setflags(write=False)
    return window


def frames(waveform, frame: int, hop: int):
    """``(batch, samples)`` -> ``(batch, frames, frame)`` on the grid above (rows shorter than
    one frame zero-padded to one)."""
    import tensorflow as tf

    waveform = tf.convert_to_tensor(waveform, tf.float32)
    waveform = tf.pad(waveform, [[0, 0], [0, tf.maximum(frame - tf.shape(waveform)[1], 0)]])
    return tf.signal.frame(waveform, frame, hop, pad_end=False)


def power_spectrum(waveform, params, n_bins=None):
    """Hann-windowed power spectrum ``|rfft|**2``, float32 ``(batch, frames, n_bins or
    n_fft // 2 + 1)`` of a ``(batch, samples)`` waveform."""
    import tensorflow as tf

    windowed = frames(waveform, params.frame, params.hop) * tf.constant(hann_window(params.frame))
    spectrum = tf.signal.rfft(windowed, fft_length=[params.n_fft])
    power = tf.math.square(tf.math.real(spectrum)) + tf.math.square(tf.math.imag(spectrum))
    # Sliced after the real/imaginary split: LiteRT has no strided slice of complex tensors.
    return power if n_bins is None else power[..., :n_bins]


def log_spectrogram(waveform, params):
    """``(batch, samples)`` float32 -> ``(batch, frames, n_bins)`` log-power spectrogram."""
    import tensorflow as tf

    return tf.math.log(power_spectrum(waveform, params, params.n_bins) + params.log_floor)
