"""Export and inference.

- ``serving.export_run(run_dir, out_dir, fold=None) -> Path``: a SavedModel whose ``serve``
  endpoint takes a float32 waveform ``[batch, samples]`` (exp3/exp4; exp2: the LLD matrix) and
  returns ``probabilities`` and ``attention``; labels, sample rate and attention step travel
  with it (``labels``/``metadata`` endpoints, ``assets/labels.txt``, ``export.json``).
- ``predict.predict_files(model, paths, ...)`` / ``predict.run_predict_command(...)``: label
  audio files with a run directory or an export, sliding windows and an attention timeline.
- ``frontend``: the TensorFlow twin of the NumPy front end (spectrogram, normalisation, PCA).
- ``graph``: ``ServingGraph``, the TensorFlow functions the export saves as endpoints.
- ``fastgraph``: the inference graph with TensorFlow's fused LSTM kernel (the export's fast path).
- ``bundle.load_fold(run_dir, fold)``: one fold of a run, loaded for inference.

Submodules are imported on use: importing this package does not import TensorFlow.
"""
