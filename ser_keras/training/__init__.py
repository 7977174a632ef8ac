"""Training: every fold of a protocol, and what a fold is made of.

- ``run``: ``train_folds(config, run_dir)`` trains every fold of a protocol that is not done
  (the orchestrator; ``evaluation.fit.fit`` adds the run-level results).
- ``fold``: the fold engine, ``run_fold``: front end, model, test predictions, ``result.json``.
- ``network``: a network's phases (SAE kernels, Keras ``fit``, early stopping, refit).
- ``svm``: the SVM path (exp1).
- ``callbacks``: per-epoch validation confusion matrix / WA / UA to TensorBoard and CSV,
  resumable early stopping on validation UA, checkpoints (``EpochCheckpoint``).
- ``confusion_image``: the per-epoch confusion matrix as a small image for TensorBoard.
- ``resume``: run-directory identity (config hash).
- ``distribute``: ``runtime.strategy`` -> a ``tf.distribute`` strategy (multi-worker reads TF_CONFIG).
- ``sae_pretrain``: sparse auto-encoder pre-training of the SAE-CNN kernels.
- ``parallel``: ``runtime.jobs`` folds at once, each in a worker process.

Submodules import TensorFlow; import them directly (``from ser_keras.training.run import train_folds``).
"""
