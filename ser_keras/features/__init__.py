"""The feature front end of section 4.1 of the paper: ONE implementation, in TensorFlow ops.

- ``frontend_ops``: waveform -> model input (``FrontEndParams``, ``tf_frontend``): what feature
  extraction, training, ``predict`` and the export graph all run.
- ``spectrogram``: log-power spectrogram (20 ms Hann frames, 10 ms hop, 512-point FFT, 256 bins).
- ``level``: the level normalisation and the speech flag.
- ``pitch`` / ``channels``: YIN pitch channels (log F0 + voicing) and what they are.
- ``llds``: per-frame LLDs (F0 + voicing, F1-F3, log energy, ZCR, 13 MFCC) and functionals.
- ``normalize``: ``FeatureNormalizer`` (neutral-speech statistics of the training fold).
- ``pca``: ``FramePCA`` (fitted on training frames only).
- ``frontend``: ``FittedFrontEnd``, one fold's fitted normaliser + PCA, saved and loaded as one:
  fitted in NumPy, applied by ``frontend_ops``.
- ``cache`` / ``extract``: the on-disk feature cache and ``extract_features``.
"""
