"""A serving copy of a Keras model whose LSTMs run TensorFlow's fused kernel.

Keras 3 runs an LSTM on CPU as a ``tf.while_loop`` of ~25 small ops per time step; in the
export that loop is most of the network's time and batching does not help it. TensorFlow has
a fused CPU kernel for a whole LSTM sequence, ``tf.raw_ops.BlockLSTMV2`` (Keras' gate layout
i, f, c, o; no forget bias added, no clipping, no peepholes: the Keras weights are used as
they are): one op per direction instead of one loop iteration per step.

``fused_model(model)`` is ``keras.models.clone_model`` of the model (public API, any topology:
exp4's chain and exp5's statistics branch alike) in which every ``LSTM`` and
``Bidirectional(LSTM)`` the kernel reproduces exactly is replaced by a ``FusedLSTM`` holding the
*same* variables, and every other layer is the original layer itself (shared, not copied). The
training model is not touched. Masking follows Keras for padding at the end of each row (the
only padding the export makes): the forward direction stops at each row's last valid step, the
backward direction starts there (``tf.reverse_sequence`` with the lengths the mask gives), and
the outputs at padded steps are what Keras gives (zeros in a Bidirectional, the last valid
output in a plain LSTM unless its ``zero_output_for_mask``). A mask with holes inside a row (a
real frame whose features are all exactly 0) is read as its count of valid steps — the one case
where the two differ.

BlockLSTMV2 is not a LiteRT builtin op, so the LiteRT conversion (``export.litert``) converts
the same ``ServingGraph`` built with ``fused=False``: the plain Keras model.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _lstm_ok(layer) -> bool:
    """An LSTM the fused kernel reproduces exactly: default activations, a bias, one output."""
    if not isinstance(layer, keras.layers.LSTM):
        return False
    cell = layer.cell
    return (not layer.stateful and not layer.return_state and cell.use_bias
            and cell.activation is keras.activations.tanh
            and cell.recurrent_activation is keras.activations.sigmoid)


def fusable(layer) -> bool:
    """Whether `layer` is an LSTM or a concatenating Bidirectional of two LSTMs that
    ``FusedLSTM`` can run (the backward one reading backwards, as Bidirectional makes it)."""
    if isinstance(layer, keras.layers.Bidirectional):
        forward, backward = layer.forward_layer, layer.backward_layer
        return (_lstm_ok(forward) and _lstm_ok(backward) and layer.merge_mode == "concat"
                and not forward.go_backwards and backward.go_backwards
                and forward.return_sequences == backward.return_sequences)
    return _lstm_ok(layer) and not layer.go_backwards


def _sequence(cell, x, steps, reverse: bool):
    """All outputs ``(batch, T, units)`` of one LSTM direction over ``x`` ``(batch, T, D)``;
    `steps` ``(batch,)`` valid steps per row. `reverse`: read each row from its last valid step
    back to the first; the outputs come back in input order."""
    if reverse:
        x = tf.reverse_sequence(x, steps, seq_axis=1, batch_axis=0)
    weights = tf.concat([tf.convert_to_tensor(cell.kernel), tf.convert_to_tensor(cell.recurrent_kernel)], axis=0)
    zeros = tf.zeros(tf.stack([tf.shape(x)[0], cell.units]), x.dtype)
    peephole = tf.zeros([cell.units], x.dtype)
    outputs = tf.raw_ops.BlockLSTMV2(
        seq_len_max=tf.cast(tf.shape(x)[1], tf.int64), x=tf.transpose(x, [1, 0, 2]),
        cs_prev=zeros, h_prev=zeros, w=weights, wci=peephole, wcf=peephole, wco=peephole,
        b=tf.convert_to_tensor(cell.bias), cell_clip=0.0, use_peephole=False)
    h = tf.transpose(outputs[6], [1, 0, 2])
    if reverse:
        h = tf.reverse_sequence(h, steps, seq_axis=1, batch_axis=0)
    return h


class FusedLSTM(keras.layers.Layer):
    """Serving-only stand-in for an ``LSTM`` or ``Bidirectional(LSTM)`` (``fusable``): the same
    variables (read from the original layer, never copied), run by ``BlockLSTMV2``."""

    def __init__(self, original, **kwargs):
        super().__init__(name=f"{original.name}_fused", **kwargs)
        self.original = original
        self.bidirectional = isinstance(original, keras.layers.Bidirectional)
        self.return_sequences = bool(original.return_sequences)
        self.supports_masking = True
        self.built = True

    def call(self, x, mask=None):
        valid = tf.ones(tf.shape(x)[:2], tf.bool) if mask is None else tf.cast(mask, tf.bool)
        steps = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
        keep = tf.cast(valid, x.dtype)[:, :, None]
        if not self.bidirectional:
            h = _sequence(self.original.cell, x, steps, reverse=False)
            last = tf.maximum(steps - 1, 0)
            nonempty = tf.cast(steps > 0, x.dtype)[:, None]
            if not self.return_sequences:
                return tf.gather(h, last, axis=1, batch_dims=1) * nonempty
            if self.original.zero_output_for_mask:
                return h * keep
            # A plain LSTM repeats its last valid output over the padded steps (zeros before any).
            held = tf.gather(h, last, axis=1, batch_dims=1) * nonempty
            return h * keep + held[:, None, :] * (1.0 - keep)
        forward = _sequence(self.original.forward_layer.cell, x, steps, reverse=False)
        backward = _sequence(self.original.backward_layer.cell, x, steps, reverse=True)
        if self.return_sequences:
            # Bidirectional gives zeros at masked steps.
            return tf.concat([forward, backward], axis=-1) * keep
        # The last output after the valid part: the last valid step reading forward, the first
        # step reading backward; the initial state (zeros) for a row with no valid step.
        nonempty = tf.cast(steps > 0, x.dtype)[:, None]
        last = tf.gather(forward, tf.maximum(steps - 1, 0), axis=1, batch_dims=1)
        return tf.concat([last, backward[:, 0]], axis=-1) * nonempty

    def compute_mask(self, x, mask=None):
        return mask if self.return_sequences else None

    def compute_output_shape(self, input_shape):
        return self.original.compute_output_shape(input_shape)


def fused_model(model):
    """A copy of `model` for serving, its fusable recurrent layers replaced by ``FusedLSTM``
    (the other layers shared); `model` itself when it has none."""
    if not any(fusable(layer) for layer in model.layers):
        return model

    def clone(layer):
        return FusedLSTM(layer) if fusable(layer) else layer

    return keras.models.clone_model(model, clone_function=clone)
