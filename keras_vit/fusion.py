"""XLA fusion of the element-wise work between a training step's matrix products.

On the TensorFlow backend without ``jit_compile`` (the fastest setting on
CPU, where oneDNN runs the GEMMs, bf16 included), every element-wise op of
a training step (LayerNorm statistics, GELU, the float32 softmax, the casts
around them, and all their gradients) is its own kernel and its own pass
over memory. ``fused_in_training`` compiles one such region, forward and
gradient, into fused XLA loops while the GEMMs around it stay with oneDNN.

Only training uses the clusters: inference graphs, and with them every
export (SavedModel, TFLite, ONNX), stay free of XLA ops, because TF Serving
runs XLA on CPU only with ``--xla_cpu_compilation_enabled`` and the TFLite
and ONNX converters have no use for them. On the other backends the plain
function always runs (JAX compiles everything with XLA anyway).
"""

from __future__ import annotations

import keras


def fused_in_training(fn):
    """``fn`` as one XLA cluster when training on TensorFlow, plain otherwise.

    Inside a step that is already XLA-compiled (``jit_compile=True``) the
    cluster is simply inlined.

    Args:
        fn: a function of tensors (and Python constants) written with
            ``keras.ops``.

    Returns:
        ``call(*args, training=False)``: ``fn(*args)``, compiled with XLA
        when ``training`` is true and the backend is TensorFlow.
    """
    if keras.backend.backend() != "tensorflow":
        return lambda *args, training=False: fn(*args)
    import tensorflow as tf

    compiled = tf.function(fn, jit_compile=True, autograph=False)

    def call(*args, training=False):
        if not training:
            return fn(*args)
        # Variables are read here, in the caller's (replica's) context: handed
        # to the function as variables, a mirrored one would be read from one
        # replica for all and get no gradient on the others.
        return compiled(*(tf.convert_to_tensor(a) if _is_variable(a) else a for a in args))

    return call


def _is_variable(value):
    import tensorflow as tf

    return isinstance(value, (keras.Variable, tf.Variable))
