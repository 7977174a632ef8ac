"""The feature front end of section 4.1 of the paper (NumPy only; no TensorFlow import).

- ``spectrogram``: log-power spectrogram (20 ms Hann frames, 10 ms hop, 512-point FFT, 256 bins).
- ``llds``: per-frame LLDs (F0 + voicing, F1-F3, log energy, ZCR, 13 MFCC) and functionals.
- ``normalize``: ``FeatureNormalizer`` (neutral-speech statistics of the training fold).
- ``pca``: ``FramePCA`` (fitted on training frames only).
- ``frontend``: ``FittedFrontEnd``, one fold's fitted normaliser + PCA, saved and loaded as one.
- ``cache`` / ``extract``: the on-disk feature cache and parallel ``extract_features``.
"""
