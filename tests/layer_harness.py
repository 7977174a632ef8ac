"""The project's layer test harness, modelled on keras `testing/test_case.py::run_layer_test`.

`run_layer_test` puts one custom layer through:

1. config round trip: `get_config()` is JSON-serialisable (so it holds no arrays),
   `from_config(get_config())` gives the same config, and so does
   `serialize_keras_object` / `deserialize_keras_object` (the registered name resolves);
2. weights: trainable / non-trainable counts once built;
3. shapes: eager outputs match `compute_output_shape` of the concrete input shape, and a
   symbolic call on `keras.Input((None, D))` gives the shapes `compute_output_shape` gives;
4. masking (when a mask is given): outputs -- all of them, padded positions included -- do
   not change when the values under the mask change; each utterance gives the same valid
   outputs in the padded batch as alone and unpadded (so a prediction never depends on the
   batch it is in); `compute_mask` gives `expected_mask(mask)`;
5. `.keras` save / load of `Input -> Masking(0.0) -> layer` with equal predictions;
6. one `fit` step of `Input -> Masking -> layer -> (pool) -> Dense(1)`: a finite loss, the
   layer's trainable weights move and its non-trainable ones do not.
"""

from __future__ import annotations

import json
import os
import tempfile

import keras
import numpy as np
from keras import ops


def _numpy(x):
    return keras.tree.map_structure(lambda t: None if t is None else np.asarray(ops.convert_to_numpy(t)), x)


def _flat(x):
    return [t for t in keras.tree.flatten(x)]


def _first(x):
    return x[0] if isinstance(x, (list, tuple)) else x


def check_config_round_trip(layer):
    config = layer.get_config()
    text = json.dumps(config, sort_keys=True)  # fails on arrays and other non-config values
    revived = layer.__class__.from_config(config)
    assert json.dumps(revived.get_config(), sort_keys=True) == text
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"].startswith("ser_keras>"), serialized["registered_name"]
    revived = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(revived) is type(layer)
    assert json.dumps(revived.get_config(), sort_keys=True) == text


def check_shapes(layer_cls, init_kwargs, x):
    layer = layer_cls(**init_kwargs)
    eager = layer(x)
    expected = layer.compute_output_shape(x.shape)
    got = keras.tree.map_structure(lambda t: tuple(t.shape), eager)
    assert _shape_list(got) == _shape_list(expected), (got, expected)

    symbolic_layer = layer_cls(**init_kwargs)
    inputs = keras.Input(shape=(None,) + tuple(x.shape[2:]))
    symbolic = symbolic_layer(inputs)
    expected = symbolic_layer.compute_output_shape(inputs.shape)
    got = keras.tree.map_structure(lambda t: tuple(t.shape), symbolic)
    assert _shape_list(got) == _shape_list(expected), (got, expected)
    return layer, eager


def _shape_list(shapes):
    if isinstance(shapes, (list, tuple)) and shapes and isinstance(shapes[0], (list, tuple)):
        return [tuple(s) for s in shapes]
    return [tuple(shapes)]


def _lengths(mask):
    return [int(np.max(np.nonzero(row)[0]) + 1) if row.any() else 0 for row in mask]


def check_masking(layer, x, mask, expected_mask, atol):
    rng = np.random.default_rng(0)
    base = _numpy(layer(x, mask=mask))
    garbage = np.where(mask[..., None], x, rng.normal(5.0, 3.0, x.shape).astype(x.dtype))
    changed = _numpy(layer(garbage, mask=mask))
    for a, b in zip(_flat(base), _flat(changed)):
        np.testing.assert_allclose(a, b, atol=atol, err_msg="outputs depend on padded values")

    out_mask = layer.compute_mask(x, mask)
    if expected_mask is not None:
        want = expected_mask(mask)
        keras.tree.map_structure(
            lambda got, exp: (got is None and exp is None)
            or np.testing.assert_array_equal(np.asarray(got), np.asarray(exp)),
            out_mask,
            want,
        )
    seq_mask = _numpy(_first(out_mask)) if out_mask is not None else None

    for i, length in enumerate(_lengths(mask)):
        alone = _numpy(layer(x[i : i + 1, :length]))
        for batch_out, alone_out in zip(_flat(base), _flat(alone)):
            batch_row, alone_row = batch_out[i], alone_out[0]
            message = f"utterance {i}: padded-batch output differs from the unpadded one"
            is_sequence = seq_mask is not None and batch_row.ndim >= 1 and batch_row.shape[0] == seq_mask.shape[1]
            if is_sequence:
                valid = int(seq_mask[i].sum())
                assert alone_row.shape[0] == valid, (
                    f"utterance {i}: {alone_row.shape[0]} steps alone, {valid} valid steps in the batch"
                )
            if batch_row.shape != alone_row.shape:
                # A sequence output: the utterance's own steps first, zeros after them.
                steps = alone_row.shape[0]
                np.testing.assert_allclose(batch_row[:steps], alone_row, atol=atol, err_msg=message)
                np.testing.assert_array_equal(batch_row[steps:], 0,
                                              err_msg=f"utterance {i}: non-zero output on padding")
            else:
                np.testing.assert_allclose(batch_row, alone_row, atol=atol, err_msg=message)


def _masked_model(layer, x):
    inputs = keras.Input(shape=(None,) + tuple(x.shape[2:]), name="features")
    outputs = layer(keras.layers.Masking(0.0, name="masking")(inputs))
    return keras.Model(inputs, outputs)


def check_save_load(layer_cls, init_kwargs, x, atol, prepare=None):
    layer = layer_cls(**init_kwargs)
    model = _masked_model(layer, x)
    if prepare is not None:
        prepare(layer)
    before = _numpy(model.predict(x, verbose=0))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
    after = _numpy(loaded.predict(x, verbose=0))
    for a, b in zip(_flat(before), _flat(after)):
        np.testing.assert_allclose(a, b, atol=atol, err_msg=".keras round trip changed outputs")
    assert any(isinstance(layer, layer_cls) for layer in loaded.layers)


def check_fit_step(layer_cls, init_kwargs, x):
    layer = layer_cls(**init_kwargs)
    inputs = keras.Input(shape=(None,) + tuple(x.shape[2:]))
    h = _first(layer(keras.layers.Masking(0.0)(inputs)))
    if len(h.shape) == 3:
        h = keras.layers.GlobalAveragePooling1D()(h)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    trainable = [w.numpy().copy() for w in layer.trainable_weights]
    frozen = [w.numpy().copy() for w in layer.non_trainable_weights]
    y = np.random.default_rng(1).normal(size=(x.shape[0], 1)).astype("float32")
    history = model.fit(x, y, batch_size=x.shape[0], epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for old, new in zip(trainable, layer.trainable_weights):
        assert not np.allclose(old, new.numpy()), f"trainable weight {new.path} did not move"
    for old, new in zip(frozen, layer.non_trainable_weights):
        np.testing.assert_array_equal(old, new.numpy(), err_msg=f"frozen weight {new.path} moved")


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    *,
    mask=None,
    expected_mask=None,
    expected_output_shape=None,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    supports_masking=True,
    prepare=None,
    run_training_check=True,
    atol=1e-5,
):
    """Run the checks of the module docstring on `layer_cls(**init_kwargs)`.

    Args:
        input_data: `(batch, frames, D)` float32 array; where `mask` is given, its values
            under the mask are zero (as the real zero-padded batches are).
        mask: `(batch, frames)` bool array or None.
        expected_mask: `f(mask) -> expected compute_mask output` (None values allowed).
        expected_output_shape: shape (or list of shapes) of the eager outputs.
        prepare: `f(layer)` called after build in the save/load check (e.g. to assign
            non-default weights).
    """
    x = np.asarray(input_data, dtype="float32")
    check_config_round_trip(layer_cls(**init_kwargs))
    layer, eager = check_shapes(layer_cls, init_kwargs, x)
    assert layer.supports_masking == supports_masking
    if expected_output_shape is not None:
        got = keras.tree.map_structure(lambda t: tuple(t.shape), eager)
        assert _shape_list(got) == _shape_list(expected_output_shape), (got, expected_output_shape)
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights
    if expected_num_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    if mask is not None:
        mask = np.asarray(mask, bool)
        assert np.all(x[~mask] == 0), "input_data must be zero under the mask"
        check_masking(layer, x, mask, expected_mask, atol)
    check_save_load(layer_cls, init_kwargs, x, atol, prepare)
    if run_training_check:
        check_fit_step(layer_cls, init_kwargs, x)
    return layer
