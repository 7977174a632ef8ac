"""The export's ``serve`` endpoint as a LiteRT (TensorFlow Lite) model: ``model.tflite``.

``write_litert(graph, out_dir, quantize="none")`` converts ``graph.serve`` — the function the
SavedModel's ``serve`` signature runs: a raw waveform in; ``probabilities``, ``speech`` and
``attention`` out — of a ``ServingGraph`` built with ``fused=False`` (the plain Keras LSTMs: the
SavedModel's fused LSTM kernel, ``export.fused``, is no LiteRT builtin) into
``out_dir/model.tflite``, with builtin operators only (no Flex delegate), so the
``ai-edge-litert`` wheel alone runs it (``inference.litert_runner``).

The model has one signature, ``serve``: ``waveform`` float32 ``[1, samples]`` (one recording at
the export's sample rate; any length: the runner resizes the input before each call, and LiteRT
re-plans its buffers only when the length changes) -> ``probabilities`` ``[1, classes]``,
``attention`` ``[1, steps]``, ``speech`` int32 ``[1]``, as the SavedModel's ``serve``. Why
resizing and not fixed windows: every length then runs exactly the graph the SavedModel runs
(a zero-padded fixed window would change the level reference, the pitch gate and the
statistics of the recording), and recordings longer than the training length are cut into
windows by ``predict`` anyway, so the lengths an interpreter sees stay bounded.

How the graph is made convertible, without changing what it computes (the steps are generic
graph rewrites: they know nothing of the front end's internals):

1. trace ``serve`` for one recording (batch 1) and freeze its variables into constants
   (``convert_variables_to_constants_v2``): the recurrent loops of the Keras LSTM read their
   weights inside the loop, which a converted model cannot invoke (``READ_VARIABLE``);
2. float64 -> float32 everywhere (tensor types, constants — clipped to float32's range): LiteRT
   has almost no float64 kernels, and the front end's float64 steps (the level reference, the
   speech flags, the pitch tracker's running energies) are exact enough in float32 for the
   parity measured in ``tests/test_export_litert.py`` and reported in docs/litert.md;
3. a strided slice that only inserts axes (``x[:, :, None]``) -> ``ExpandDims`` (LiteRT's
   strided slice does not always take ``new_axis_mask``);
4. conversion with ``TFLITE_BUILTINS`` only; the LSTM's tensor lists get batch 1 where their
   element shape leaves it open (``_experimental_default_to_single_batch_in_tensor_list_ops``);
5. the flat outputs named again and given the ``serve`` signature (``flatbuffer_utils``).

Quantisation (``quantize``): ``"float16"`` stores the network's weights as float16 (computed in
float32): a pass over the converted flatbuffer (``_float16_constants``), not the converter's
float16 mode, which also rounds the front end's and the functionals classifier's constants (the LPC
and DFT tables, the standardisation) and cost 4 UA points of single-recording accuracy on
EMO-DB. ``"int8"`` is the converter's dynamic-range quantisation (int8 weights, activations
quantised on the fly where a kernel supports it): it also quantises the pitch tracker's and
the functionals' products, so it is refused for an export that fuses a functionals classifier.
Their deviation from float32 is measured in docs/litert.md.
"""

from __future__ import annotations

import logging
import pathlib

import numpy as np

from ser_keras.errors import SerKerasError

LITERT_FILE = "model.tflite"
SIGNATURE = "serve"
QUANTIZE_CHOICES = ("none", "float16", "int8")


def write_litert(graph, out_dir, quantize: str = "none") -> dict:
    """Write ``out_dir/model.tflite`` from a ``ServingGraph`` of a waveform model; returns what
    export.json records of it (file, signature, input, outputs, quantize, bytes)."""
    if quantize not in QUANTIZE_CHOICES:
        raise SerKerasError(f"quantize: expected one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    import tensorflow as tf

    if quantize == "int8" and graph.functionals is not None:
        raise SerKerasError("quantize int8: dynamic-range quantisation also quantises the functionals' front end "
                            "(single-recording UA on EMO-DB fell from 71.6 to 45.9); use float16 or none")
    spec = graph.input_spec()
    one = tf.TensorSpec([1, *spec.shape[1:]], spec.dtype, name=spec.name)
    model = convert_function(graph.serve, one, quantize, half_precision=graph.net.weights)
    path = pathlib.Path(out_dir) / LITERT_FILE
    path.write_bytes(model)
    return {"file": LITERT_FILE, "signature": SIGNATURE, "input": f"{spec.name}: float32 [1, {_dims(spec)}]",
            "outputs": ["probabilities", "attention", "speech"], "quantize": quantize, "bytes": len(model),
            "variable_length": "resize the input to each recording's length (inference.litert_runner does)"}


def _dims(spec) -> str:
    return ", ".join("n" if d is None else str(d) for d in spec.shape[1:])


def convert_function(function, input_spec, quantize: str = "none", half_precision=()) -> bytes:
    """A LiteRT flatbuffer of ``function(x) -> {name: tensor}`` traced at `input_spec`, with a
    ``serve`` signature (input named after the spec, outputs after the dict's keys).
    Constants whose values float16 holds exactly (the functionals classifier's support vectors)
    are stored as float16 in every mode (``_float16_constants``); ``quantize="float16"`` rounds
    to float16 the constants that hold one of the `half_precision` weights (variables or arrays,
    in any layout)."""
    import tensorflow as tf

    pruned, names = rewritten_function(function, input_spec)
    # The frozen-graph conversion path (no trackable object): the SavedModel path cannot lower
    # the tensor lists of the front end's per-row loop. It writes no signature; step 5 does.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([pruned])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter._experimental_default_to_single_batch_in_tensor_list_ops = True
    # Keep a product's weights as given (no scale folded into them): the support vectors then stay
    # float16 values, which _float16_constants stores in half the bytes.
    converter._experimental_disable_fuse_mul_and_fc = True
    rounded = [np.asarray(w, np.float32) for w in half_precision] if quantize == "float16" else []
    if quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # the frozen-graph path is chosen on purpose: no deprecation warning
    try:
        model = converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises several kinds
        lines = [line for line in str(exc).splitlines() if "error" in line.lower()]
        raise SerKerasError(f"LiteRT conversion failed ({(lines or [str(exc)])[0][:300]})") from None
    finally:
        absl.setLevel(level)
    return _with_signature(_float16_constants(model, rounded), input_spec.name, names)


def rewritten_function(function, input_spec):
    """(concrete function, output names): `function` traced at `input_spec`, frozen and rewritten
    (steps 1-3 of the module docstring), returning its outputs as a list in the order of the
    names — the TensorFlow graph the converter gets, for checking what the rewrites change."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = tf.function(function, autograph=False).get_concrete_function(input_spec)
    names = sorted(concrete.structured_outputs)  # the flat order of a dict's values
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    _float64_to_float32(graph_def)
    _new_axis_slices_to_expand_dims(graph_def)

    def imported():
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imported, [])
    pruned = wrapped.prune([wrapped.graph.get_tensor_by_name(t.name) for t in frozen.inputs],
                           [wrapped.graph.get_tensor_by_name(t.name) for t in frozen.outputs])
    return pruned, names


# -- graph rewrites -----------------------------------------------------------------------------


def _all_nodes(graph_def):
    yield from graph_def.node
    for function in graph_def.library.function:
        yield from function.node_def


def _float64_to_float32(graph_def) -> None:
    """Every float64 type and constant of `graph_def` (and of its functions) to float32."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    double, single = types_pb2.DT_DOUBLE, types_pb2.DT_FLOAT
    largest = float(np.finfo(np.float32).max)

    def fix(attr):
        if attr.HasField("type") and attr.type == double:
            attr.type = single
        if attr.HasField("list"):
            for i, value in enumerate(attr.list.type):
                if value == double:
                    attr.list.type[i] = single
        if attr.HasField("tensor") and attr.tensor.dtype == double:
            # np.finfo(float64).max and the like (sentinels) stay finite: inf * 0 would be NaN.
            value = np.clip(tf.make_ndarray(attr.tensor), -largest, largest).astype(np.float32)
            attr.tensor.CopyFrom(tf.make_tensor_proto(value, dtype=tf.float32, shape=value.shape))

    for node in _all_nodes(graph_def):
        for key in node.attr:
            fix(node.attr[key])
    for function in graph_def.library.function:
        for arg in list(function.signature.input_arg) + list(function.signature.output_arg):
            if arg.type == double:
                arg.type = single
        for key in function.attr:
            fix(function.attr[key])


def _new_axis_slices_to_expand_dims(graph_def) -> None:
    """``x[:, :, None]`` (a StridedSlice that keeps every axis whole and inserts one) ->
    ``ExpandDims(x, axis)``, in the main graph (where the frozen graph holds its constants)."""
    import tensorflow as tf

    constants = {node.name: node for node in graph_def.node if node.op == "Const"}

    def value(name):
        node = constants.get(name.split(":")[0].lstrip("^"))
        return None if node is None else tf.make_ndarray(node.attr["value"].tensor)

    for node in list(graph_def.node):
        if node.op != "StridedSlice":
            continue
        attr = node.attr
        new_axis = attr["new_axis_mask"].i
        if not new_axis or new_axis & (new_axis - 1) or attr["shrink_axis_mask"].i or attr["ellipsis_mask"].i:
            continue
        strides = value(node.input[3])
        if strides is None or np.any(strides != 1):
            continue
        axis = new_axis.bit_length() - 1
        whole = (1 << len(strides)) - 1 & ~new_axis
        if (attr["begin_mask"].i & whole) != whole or (attr["end_mask"].i & whole) != whole:
            continue
        axis_node = graph_def.node.add()
        axis_node.name = f"{node.name}/litert_axis"
        axis_node.op = "Const"
        axis_node.attr["dtype"].type = tf.int32.as_datatype_enum
        axis_node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.int32(axis)))
        data_type = attr["T"].type
        data, control = node.input[0], [name for name in node.input if name.startswith("^")]
        # The frozen graph's loops are v1 frames: a constant joins its user's frame through a
        # control edge from the data it goes with.
        axis_node.input.append("^" + data.split(":")[0])
        node.op = "ExpandDims"
        del node.input[:]
        node.input.extend([data, axis_node.name] + control)
        for key in list(node.attr):
            del node.attr[key]
        node.attr["T"].type = data_type
        node.attr["Tdim"].type = tf.int32.as_datatype_enum


def _float16_constants(model: bytes, rounded=(), min_elements: int = 1024) -> bytes:
    """`model` with float16 buffers for its float32 constants of at least `min_elements` values
    that float16 holds exactly or that hold one of the `rounded` arrays (the same values in any
    layout: the converter transposes and reshapes weights), each read through a DEQUANTIZE
    operator (LiteRT computes a constant input's output once, when the model is prepared). The
    converter itself folds a float16 constant's cast back to float32, and its float16 mode
    rounds every constant."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    def key(values: np.ndarray) -> tuple:
        return values.size, np.sort(values.ravel()).tobytes()

    targets = {key(np.asarray(w, np.float32)) for w in rounded}
    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    halves = {}  # float32 buffer index -> float16 buffer index (buffers are shared across subgraphs)
    for buffer_index, buffer in enumerate(obj.buffers):
        if buffer.data is None or len(buffer.data) < 4 * min_elements:
            continue
        values = np.frombuffer(bytes(bytearray(buffer.data)), np.float32)
        with np.errstate(over="ignore"):  # values past float16's range are kept as float32
            half = values.astype(np.float16)
        if np.array_equal(half.astype(np.float32), values) or key(values) in targets:
            halves[buffer_index] = half
    if not halves:
        return model
    float32_tensors = {(g, t) for g, subgraph in enumerate(obj.subgraphs) for t, tensor in enumerate(subgraph.tensors)
                       if tensor.buffer in halves and tensor.type == schema.TensorType.FLOAT32}
    if not float32_tensors:
        return model
    opcode = next((i for i, code in enumerate(obj.operatorCodes)
                   if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.DEQUANTIZE), None)
    if opcode is None:
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.DEQUANTIZE
        code.version = 3  # float16 input
        obj.operatorCodes.append(code)
        opcode = len(obj.operatorCodes) - 1
    new_buffers = {}
    for index, half in halves.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(half.tobytes(), np.uint8)
        obj.buffers.append(buffer)
        new_buffers[index] = len(obj.buffers) - 1
        obj.buffers[index].data = None
    for g, subgraph in enumerate(obj.subgraphs):
        dequantize = []
        for t, tensor in enumerate(list(subgraph.tensors)):
            if (g, t) not in float32_tensors:
                continue
            stored = schema.TensorT()
            stored.shape, stored.type = tensor.shape, schema.TensorType.FLOAT16
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name or "")
            stored.buffer, stored.name = new_buffers[tensor.buffer], f"{name}/float16"
            subgraph.tensors.append(stored)
            tensor.buffer = 0  # now computed: the DEQUANTIZE's output
            op = schema.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = opcode, [len(subgraph.tensors) - 1], [t]
            dequantize.append(op)
        subgraph.operators = dequantize + list(subgraph.operators or [])
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


def _with_signature(model: bytes, input_name: str, output_names) -> bytes:
    """`model` with one signature ``serve``: its single input and its outputs named."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    subgraph = obj.subgraphs[0]
    if len(subgraph.inputs) != 1 or len(subgraph.outputs) != len(output_names):
        raise SerKerasError(f"LiteRT conversion: expected 1 input and {len(output_names)} outputs, got "
                            f"{len(subgraph.inputs)} and {len(subgraph.outputs)}")

    def tensor_map(name, index):
        item = schema.TensorMapT()
        item.name, item.tensorIndex = name, int(index)
        return item

    signature = schema.SignatureDefT()
    signature.signatureKey = SIGNATURE
    signature.subgraphIndex = 0
    signature.inputs = [tensor_map(input_name, subgraph.inputs[0])]
    signature.outputs = [tensor_map(name, index) for name, index in zip(output_names, subgraph.outputs)]
    obj.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))
