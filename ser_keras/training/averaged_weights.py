"""The optimizer's moving average of the weights in the model between epochs (``train.ema_momentum``).

``AveragedWeights`` is the first of a fold's callbacks (``training.callbacks.training_callbacks``):
it puts the averaged weights into the model at every epoch end, so everything after it
(validation, early stopping, the checkpoint, the model ``fit`` leaves) sees them, and the trained
ones back before the next epoch.
"""

from __future__ import annotations

import keras
import numpy as np

from ser_keras.errors import SerKerasError


class AveragedWeights(keras.callbacks.Callback):
    """The optimizer's moving average of the weights (``use_ema``) in the model between epochs.

    Trained weights jump from step to step, and the validation UA with them; their moving
    average is smoother and generalises better. The optimizer keeps that average beside the
    weights; this callback, first of a fold's callbacks, swaps the two at every epoch end, so
    validation, early stopping's best weights, the checkpoint and the model that ``fit`` leaves
    all hold the average, and swaps them back when the next epoch begins to train.

    A checkpoint is therefore always written swapped (model: the average; the optimizer's slot:
    the trained weights), and the first epoch of a resumed ``fit`` (``checkpoint.initial_epoch``
    above 0) starts by swapping back, so a resumed fold repeats the uninterrupted one. Keras'
    ``fit`` ends by copying that slot into the model (``finalize_variable_values``); here the
    slot holds the trained weights, so ``on_train_end`` puts the average back.

    Args:
        checkpoint: the fold's ``EpochCheckpoint`` (its ``initial_epoch`` says whether the model
            was restored swapped).
    """

    def __init__(self, checkpoint):
        super().__init__()
        self.checkpoint = checkpoint
        self._swapped = False
        self._swapper = None
        self._kept = None
        self._restored_average = None

    def _pairs(self) -> list:
        optimizer = self.model.optimizer
        averages = getattr(optimizer, "_model_variables_moving_average", None)
        if not getattr(optimizer, "use_ema", False) or averages is None:
            raise SerKerasError("AveragedWeights: the model's optimizer keeps no moving average "
                                "(compile it with train.ema_momentum)")
        return [(v, a) for v, a in zip(self.model.trainable_variables, averages) if a is not None]

    def _swap(self) -> None:
        """Exchange the model's weights and the optimizer's slot, and copy the model's new ones
        into ``self._kept`` (after an epoch end: the average). One graph call: assigning
        variable by variable from Python took a sizeable share of a short epoch."""
        if self._swapper is None:
            import tensorflow as tf

            # The TensorFlow variables behind Keras' (``.value``).
            pairs = [(variable.value, slot.value) for variable, slot in self._pairs()]
            kept = [tf.Variable(slot, trainable=False) for _, slot in pairs]

            @tf.function
            def swap():
                # Reads and writes of one variable keep program order inside a tf.function.
                for (variable, slot), copy in zip(pairs, kept):
                    old = variable.read_value()
                    variable.assign(slot.read_value())
                    slot.assign(old)
                    copy.assign(variable.read_value())

            self._swapper, self._kept = swap, kept
        self._swapper()
        self._swapped = not self._swapped

    def on_train_begin(self, logs=None):
        self._swapped = self.checkpoint.initial_epoch > 0
        self._swapper = None
        # Restored swapped (a resumed fold): the model holds the average already.
        self._restored_average = [np.asarray(v) for v, _ in self._pairs()] if self._swapped else None

    def on_epoch_begin(self, epoch, logs=None):
        if self._swapped:
            self._swap()

    def on_epoch_end(self, epoch, logs=None):
        self._swap()

    def on_train_end(self, logs=None):
        # Swapped means the last swap was an epoch end's (or the fold was restored swapped).
        if self._swapped:
            averages = self._restored_average if self._swapper is None else [v.numpy() for v in self._kept]
            for (variable, _), averaged in zip(self._pairs(), averages):
                variable.assign(averaged)
