"""Inference: label audio with a trained run or an export.

- ``predict.predict_files(model, paths, ...)`` / ``predict.run_predict_command(...)``: label
  audio files with a run directory or an export, sliding windows and an attention timeline.
- ``predictors``: the run (in-process) and export (SavedModel) predictors ``predict`` uses.
- ``fold.load_fold(run_dir, fold)``: one fold of a run loaded for inference (also what
  ``export`` builds its graph from).
- ``plot``: the ``predict --plot`` figure.

Submodules are imported on use: importing this package does not import TensorFlow.
"""
