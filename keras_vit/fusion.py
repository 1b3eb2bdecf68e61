"""XLA fusion of the element-wise work between a training step's matrix products.

On the TensorFlow backend without ``jit_compile`` (the fastest setting on
CPU, where oneDNN runs the GEMMs, bf16 included), every element-wise op of
a training step (LayerNorm statistics, GELU, the float32 softmax, the casts
around them, and all their gradients) is its own kernel and its own pass
over memory. ``xla_fused`` compiles one such region, forward and gradient,
into fused XLA loops while the GEMMs around it stay with oneDNN.

Layers use it in training only: in inference graphs grappler's oneDNN
remapper already fuses LayerNorm and MatMul + BiasAdd + GELU, and exported
graphs (SavedModel, TFLite, ONNX) stay free of XLA clusters. On the other
backends the function is returned unchanged (JAX compiles everything with
XLA anyway).
"""

from __future__ import annotations

import keras


def xla_fused(fn):
    """``fn`` compiled as one XLA cluster on TensorFlow, ``fn`` itself elsewhere.

    Inside a step that is already XLA-compiled (``jit_compile=True``) the
    cluster is simply inlined.

    Args:
        fn: a function of tensors written with ``keras.ops``.

    Returns:
        a callable with the same signature and results.
    """
    if keras.backend.backend() != "tensorflow":
        return fn
    import tensorflow as tf

    compiled = tf.function(fn, jit_compile=True, autograph=False)

    def fused(*args):
        # Variables are read here, in the caller's (replica's) context: handed
        # to the function as variables, a mirrored one would be read from one
        # replica for all and get no gradient on the others.
        return compiled(*(tf.convert_to_tensor(a) if _is_variable(a) else a for a in args))

    return fused


def _is_variable(value):
    import tensorflow as tf

    return isinstance(value, (keras.Variable, tf.Variable))
