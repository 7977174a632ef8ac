"""Training: the ``fit`` orchestrator and what it is made of.

- ``run``: ``fit(config, run_dir)`` trains and evaluates an experiment on every fold of a protocol.
- ``callbacks``: per-epoch validation confusion matrix / WA / UA to TensorBoard and CSV,
  resumable early stopping on validation UA, checkpoints (``EpochCheckpoint``).
- ``resume``: run-directory identity (config hash) and which folds are done.
- ``distribute``: ``runtime.strategy`` -> a ``tf.distribute`` strategy (multi-worker reads TF_CONFIG).
- ``sae_pretrain``: sparse auto-encoder pre-training of the SAE-CNN kernels.
- ``parallel``: ``runtime.jobs`` folds at once, each in a worker process.

Submodules import TensorFlow; import them directly (``from ser_keras.training.run import fit``).
"""
