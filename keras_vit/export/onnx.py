"""ONNX conversion of a classification ``ViT`` with tf2onnx.

The ONNX graph takes ``images`` float32 ``(batch, height, width,
channels)`` in [0, 255] (preprocessing inside) and returns ``logits`` and
``probabilities`` ``(batch, classes)``. Every file is opened and run with
onnxruntime before it is published: tf2onnx can exit without error and
still write a model that onnxruntime refuses (e.g. TF's ``Erfc``, which the
``erf`` spelling of ``keras_vit.model.ops.gelu`` avoids).

Memory: tf2onnx on a graph with the weights frozen into it holds dozens of
copies of them (TensorFlow's freezing and grappler passes, then a deep copy
of its own graph per optimiser pass): 15 GB for a ViT-B/16. So the graph is
traced with every model variable as an *input* (``keras.StatelessScope``),
tf2onnx converts a graph without weights, and the weights are attached
afterwards as initializers: each weight-only subgraph (the fused QKV
kernel's concatenation, casts, reshapes) is evaluated once by onnxruntime
and stored folded. The values are those of the variables, not specialised
to them (no ``x * 1`` removed because a LayerNorm scale happens to be one).
Models whose weights exceed protobuf's 2 GB limit are written with the
weights in ``<file>.data`` beside the ``.onnx`` file (ONNX external data).
"""

from __future__ import annotations

import os
import re

import keras
import numpy as np
import tensorflow as tf

from keras_vit.atomic import atomic_path
from keras_vit.export.saved_model import classify_fn
from keras_vit.extras import require

MAX_OPSET = 18
#: Above this many bytes of weights the file keeps them in ``<file>.data``.
EXTERNAL_DATA_BYTES = 2**31 - 2**27
#: Op types never evaluated ahead of time, even on constant inputs.
_NOT_FOLDED = (
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
)


def convert_onnx(model, path, opset=17):
    """Converts ``model`` to an ``.onnx`` file, checked with onnxruntime.

    Args:
        model: a built float32 ``keras_vit.ViT`` with a linear head; with
            ``dynamic_resolution`` the file takes any multiple of the patch
            size.
        path: str. Output ``.onnx`` file (written atomically; beyond
            ``EXTERNAL_DATA_BYTES`` of weights, the weights go to
            ``<path>.data``).
        opset: int. ONNX opset, at most 18 (tf2onnx 1.17's highest).

    Returns:
        str. ``path``.

    Raises:
        ValueError: for an opset outside 7..18.
        RuntimeError: if onnxruntime refuses or cannot run the converted
            graph.
    """
    tf2onnx = require("tf2onnx", "export", "ONNX export")
    require("onnxruntime", "export", "ONNX export")
    if not 7 <= int(opset) <= MAX_OPSET:
        raise ValueError(f"opset must be in 7..{MAX_OPSET} (tf2onnx), got {opset}.")
    function, signature, weights = weights_as_inputs(model)
    proto, _ = tf2onnx.convert.from_function(
        function, input_signature=signature, opset=int(opset), output_path=None
    )
    del function
    attach_weights(proto, weights)
    del weights
    path = os.fspath(path)
    data = os.path.join(os.path.dirname(os.path.abspath(path)), f"{os.path.basename(path)}.data")
    with atomic_path(path, ".onnx") as partial:
        try:
            _save(proto, partial, os.path.basename(data))
            del proto  # the file holds it now; free it before onnxruntime loads a copy
            _check_runs(partial, (1, *model.image_size, model.channels))
        except BaseException:
            if os.path.exists(data):
                os.remove(data)
            raise
    return path


def weights_as_inputs(model):
    """The classifier as a ``tf.function`` of the images *and* every model variable.

    Returns:
        ``(function, input_signature, weights)``: ``function(images,
        *values)`` computes ``classify_fn(model)`` with the variables read
        from ``values`` (``keras.StatelessScope``) and returns ``logits`` and
        ``probabilities``; ``weights`` maps each value input's name to the
        variable's value (NumPy).
    """
    variables = list(model.variables)
    names = _input_names(variables)
    specs = [tf.TensorSpec(v.shape, v.dtype, name=n) for v, n in zip(variables, names)]
    signature = [model.images_spec(), *specs]
    classify = classify_fn(model)

    @tf.function(input_signature=signature, autograph=False)
    def function(images, *values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            outputs = classify(images)
        return {name: tf.identity(value, name=name) for name, value in outputs.items()}

    weights = {name: keras.ops.convert_to_numpy(v) for name, v in zip(names, variables)}
    return function, signature, weights


def _input_names(variables):
    """Unique graph-input names from the variables' paths (``encoderblock_0/...``)."""
    names = []
    for number, variable in enumerate(variables):
        name = re.sub(r"[^A-Za-z0-9_./-]", "_", variable.path).lstrip("./-_") or "weight"
        names.append(name if name not in names else f"{name}_{number}")
    return names


def attach_weights(proto, weights):
    """Turns the weight inputs of a converted graph into (folded) initializers, in place.

    Every node whose inputs are all weights, initializers or outputs of
    such nodes is evaluated once with onnxruntime and removed; the tensors
    the rest of the graph reads from that part become initializers. Unused
    weights (e.g. dropout seed states) are dropped.

    Args:
        proto: ``onnx.ModelProto`` whose graph inputs include ``weights``.
        weights: dict input name -> NumPy value.
    """
    from onnx import numpy_helper

    graph = proto.graph
    constant = set(weights) | {init.name for init in graph.initializer}
    folded = []  # node numbers; tf2onnx writes nodes in topological order
    for number, node in enumerate(graph.node):
        if node.op_type not in _NOT_FOLDED and all(not i or i in constant for i in node.input):
            folded.append(number)
            constant.update(node.output)
    skipped = set(folded)
    needed = {i for n, node in enumerate(graph.node) if n not in skipped for i in node.input}
    needed |= {output.name for output in graph.output}
    folded_nodes = [graph.node[number] for number in folded]
    produced = [o for node in folded_nodes for o in node.output if o in needed]
    values = _evaluate(proto, folded_nodes, produced, weights)
    values.update({name: weights[name] for name in needed & set(weights)})
    _remove(graph.node, folded)
    _remove(graph.input, [n for n, i in enumerate(graph.input) if i.name in weights])
    _remove(graph.initializer, [n for n, i in enumerate(graph.initializer) if i.name not in needed])
    for name in sorted(values):
        graph.initializer.append(numpy_helper.from_array(np.asarray(values.pop(name)), name))


def _remove(repeated, numbers):
    """Deletes the elements ``numbers`` of a protobuf repeated field."""
    for number in sorted(numbers, reverse=True):
        del repeated[number]


def _evaluate(proto, nodes, outputs, weights):
    """``{name: value}`` of ``outputs`` of the weight-only ``nodes``, run by onnxruntime."""
    if not outputs:
        return {}
    import onnx
    import onnxruntime

    graph = proto.graph
    read = {i for node in nodes for i in node.input}
    sub = onnx.helper.make_graph(
        list(nodes),
        "weights",
        [i for i in graph.input if i.name in read],
        [onnx.ValueInfoProto(name=name) for name in outputs],
        [init for init in graph.initializer if init.name in read],
    )
    model = onnx.helper.make_model(
        sub, opset_imports=proto.opset_import, ir_version=proto.ir_version
    )
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feed = {i.name: weights[i.name] for i in session.get_inputs()}
    return dict(zip(outputs, session.run(outputs, feed)))


def _save(proto, path, data):
    """Writes ``proto`` to ``path``; beyond ``EXTERNAL_DATA_BYTES`` its weights go to ``data``.

    ``data`` is a file name in the folder of ``path`` (where ONNX looks for it).
    """
    import onnx

    weight_bytes = sum(len(init.raw_data) for init in proto.graph.initializer)
    if weight_bytes <= EXTERNAL_DATA_BYTES:
        onnx.save_model(proto, path)
        return
    onnx.save_model(
        proto,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data,
        size_threshold=1024,
    )


def _check_runs(path, input_shape):
    """Loads and runs the graph with onnxruntime; raises if it refuses."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.zeros(input_shape, "float32")}
        outputs = session.run(None, feed)
    except Exception as err:  # onnxruntime raises its own exception types
        raise RuntimeError(f"tf2onnx wrote an ONNX graph that onnxruntime refuses: {err}") from err
    if not all(np.isfinite(out).all() for out in outputs):
        raise RuntimeError("The converted ONNX graph gives non-finite outputs.")
