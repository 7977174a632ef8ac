"""Export: a trained fold as a SavedModel that takes a raw waveform, and nothing else.

- ``serving.export_run(run_dir, out_dir, fold=None) -> Path``: a SavedModel whose ``serve``
  endpoint takes a float32 waveform ``[batch, samples]`` and returns ``probabilities``,
  ``attention`` and ``speech``; labels, sample rate and attention step travel with it
  (``labels``/``metadata`` endpoints, ``assets/labels.txt``, ``export.json``). The endpoints
  are described in ``docs/export_endpoints.md``.
- ``graph``: ``ServingGraph``, the TensorFlow functions the export saves as endpoints (the
  front end's ops from ``features.frontend_ops``, then the fold's Keras model, its LSTMs run by
  a fused kernel: ``fused``).

Inference (``predict``, its plot, loading a fold) is ``ser_keras.inference``. Submodules are
imported on use: importing this package does not import TensorFlow.
"""
