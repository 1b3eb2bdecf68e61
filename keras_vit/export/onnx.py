"""ONNX conversion of a classification ``ViT`` with tf2onnx.

The ONNX graph takes ``images`` float32 ``(batch, height, width,
channels)`` in [0, 255] (preprocessing inside) and returns ``logits`` and
``probabilities`` ``(batch, classes)``. Every file is opened and run with
onnxruntime before it is written: tf2onnx can exit without error and still
write a model that onnxruntime refuses (e.g. TF's ``Erfc``, which the
``erf`` spelling of ``keras_vit.model.ops.gelu`` avoids).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_vit.atomic import write_bytes_atomic
from keras_vit.export.saved_model import classify_fn, images_spec

MAX_OPSET = 18


def convert_onnx(model, path, opset=17):
    """Converts ``model`` to an ``.onnx`` file, checked with onnxruntime.

    Args:
        model: a built float32 ``keras_vit.ViT`` with a linear head; with
            ``dynamic_resolution`` the file takes any multiple of the patch
            size.
        path: str. Output ``.onnx`` file (written atomically).
        opset: int. ONNX opset, at most 18 (tf2onnx 1.17's highest).

    Returns:
        str. ``path``.

    Raises:
        ValueError: for an opset above 18.
        RuntimeError: if onnxruntime refuses or cannot run the converted
            graph.
    """
    import tf2onnx

    if not 7 <= int(opset) <= MAX_OPSET:
        raise ValueError(f"opset must be in 7..{MAX_OPSET} (tf2onnx), got {opset}.")
    spec = images_spec(model)
    classify = classify_fn(model)

    @tf.function(input_signature=[spec])
    def function(images):
        outputs = classify(images)
        return {name: tf.identity(value, name=name) for name, value in outputs.items()}

    proto, _ = tf2onnx.convert.from_function(
        function, input_signature=[spec], opset=int(opset), output_path=None
    )
    serialized = proto.SerializeToString()
    _check_runs(serialized, (1, *model.image_size, model.channels))
    return write_bytes_atomic(serialized, path, ".onnx")


def _check_runs(serialized, input_shape):
    """Loads and runs the graph with onnxruntime; raises if it refuses."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(serialized, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.zeros(input_shape, "float32")}
        outputs = session.run(None, feed)
    except Exception as err:  # onnxruntime raises its own exception types
        raise RuntimeError(f"tf2onnx wrote an ONNX graph that onnxruntime refuses: {err}") from err
    if not all(np.isfinite(out).all() for out in outputs):
        raise RuntimeError("The converted ONNX graph gives non-finite outputs.")
