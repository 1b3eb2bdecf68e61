"""Numeric kernels of the ViT layers and the XLA-fusion policy of training.

Kernels (``keras.ops`` only): ``gelu`` (exact GELU spelled with ``erf``,
or the tanh approximation), ``softmax_float32``, ``layer_norm`` and
``add_layer_norm`` (a residual add and the LayerNorm after it); and
``affine`` (``x @ kernel + bias``) with ``bias_add`` / ``rows_like``, the
forms of a GEMM's bias and of its input rows under which TensorFlow's
remapper fuses the bias, and a residual add, into the GEMM; and
``block_affine``, a block's QKV and output GEMMs (TensorFlow ops in the
oneDNN spelling).

Fusion: on the TensorFlow backend without ``jit_compile`` (the fastest
setting on CPU, where oneDNN runs the GEMMs, bf16 included), every
element-wise op of a training step (LayerNorm statistics, GELU, the float32
softmax, the casts around them, and all their gradients) is its own kernel
and its own pass over memory. ``fused_in_training`` compiles one such
region, forward and gradient, into fused XLA loops while the GEMMs around it
stay with oneDNN; ``fused_gelu``, ``fused_softmax`` and ``fused_layer_norm``
are the layers' regions.

Only training uses the clusters: inference graphs, and with them every
export (SavedModel, TFLite, ONNX), stay free of XLA ops, because TF Serving
runs XLA on CPU only with ``--xla_cpu_compilation_enabled`` and the TFLite
and ONNX converters have no use for them. On the other backends the plain
function always runs (JAX compiles everything with XLA anyway).

Spelling for a graph compiler: inside ``spelled_for("openvino")`` the layers
trace the forms OpenVINO fuses (``spelling()`` says which applies): each
LayerNorm as one MVN kernel (see ``layer_norm``), and every GEMM on 3-D
tokens with separate query, key and value products (see
``keras_vit.model.blocks``). Inside ``spelled_for("onednn")`` (what
``keras_vit.freeze`` traces where TensorFlow runs oneDNN) each LayerNorm is
the form Grappler fuses into one ``_MklLayerNorm`` kernel, LayerNorm and
softmax take a bf16 input without casts (oneDNN's kernels compute it in
float32), and some block GEMMs are 1x1 convolutions (``block_affine``); a
graph tuned for one image (``spelled_for("onednn", batch_size=1)``) runs
the bf16 QKV product as one bare MatMul with its bias inside. With
keras-vit's CPU kernels given to it (``spelled_for("onednn", kernels=...)``,
``native_kernels``), each LayerNorm (float32 or bfloat16), each block's
attention residual add with the LayerNorm after it (a float32 stream), and
each float32 self-attention is one op of ``keras_vit.kernels``. Every other
graph (exports included) keeps the default.
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import keras
from keras import ops

from keras_vit.validation import integer


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


def gelu(x, approximate=False):
    """GELU activation; exact form written with ``erf``.

    The exact form is ``0.5 x (1 + erf(x / sqrt(2)))``. TensorFlow's own exact
    GELU lowers to ``Erfc``, which tf2onnx cannot convert; this spelling
    converts and is equal to float32 precision. ``approximate=True`` is the
    tanh approximation the official JAX checkpoints were trained with.

    Args:
        x: tensor of any shape.
        approximate: bool. Use the tanh approximation.
    """
    if approximate:
        return ops.gelu(x, approximate=True)
    return 0.5 * x * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))


def softmax_float32(logits):
    """Softmax over the last axis in float32, returned in the logits' dtype.

    Inside ``spelled_for("onednn")`` the logits go to the softmax in their
    own dtype: oneDNN's softmax kernel computes a bfloat16 input in float32
    and rounds once on output, so the two casts around it (two passes over
    the ``(B, heads, T, T)`` weights each, 6 % of a frozen bf16 ViT-B/16
    step) give the same numbers.
    """
    if spelling() == "onednn":
        return ops.softmax(logits, axis=-1)
    return ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), logits.dtype)


#: The graph compilers the layers have a spelling for (``spelled_for``).
SPELLINGS = ("default", "openvino", "onednn")
_SPELLING = contextvars.ContextVar("spelling", default=("default", None, None))


@contextlib.contextmanager
def spelled_for(target, batch_size=None, kernels=None):
    """Layers traced inside are spelled for ``target``, one of ``SPELLINGS``.

    Args:
        target: str, one of ``SPELLINGS``.
        batch_size: optional int >= 1: the batch size the graph is tuned for
            (``spelled_batch_size``); the graph still takes any batch size.
        kernels: optional, with ``"onednn"`` only: the module of keras-vit's
            CPU kernels (``keras_vit.kernels.load()``), which then run
            the LayerNorms, residual adds and self-attentions of
            ``KERNEL_DTYPES`` (``native_kernels``).
    """
    if target not in SPELLINGS:
        raise ValueError(f"target must be one of {SPELLINGS}, got {target!r}.")
    if target == "onednn" and keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"The 'onednn' spelling is TensorFlow's; Keras runs {keras.backend.backend()!r}."
        )
    if kernels is not None and target != "onednn":
        raise ValueError(f"keras-vit's CPU kernels go with the 'onednn' spelling; got {target!r}.")
    if batch_size is not None:
        batch_size = integer(batch_size, "batch_size", minimum=1)
    token = _SPELLING.set((target, batch_size, kernels))
    try:
        yield
    finally:
        _SPELLING.reset(token)


def spelling():
    """The spelling of the graph being traced: one of ``SPELLINGS``."""
    return _SPELLING.get()[0]


def spelled_batch_size():
    """The batch size the traced graph is tuned for (``spelled_for``), or None."""
    return _SPELLING.get()[1]


#: The compute dtypes each of keras-vit's CPU kernels runs (``keras_vit.kernels``). In
#: bf16 TensorFlow's own attention ops stay: their bf16 products run at twice
#: the float32 kernel's rate (the kernel's float32 attention took 1.5x their
#: share of a frozen bf16 ViT-B/16 step at batch 1, the LayerNorm 0.5x).
KERNEL_DTYPES = {
    "layer_norm": ("float32", "bfloat16"),  # the input's
    "add_layer_norm": ("float32",),  # the stream's
    "self_attention": ("float32",),
}


def native_kernels(dtype, kernel):
    """keras-vit's CPU kernels module where the traced graph runs ``kernel`` on ``dtype``, or None.

    They are given to ``spelled_for("onednn", kernels=...)``; ``kernel`` is a
    key of ``KERNEL_DTYPES``.
    """
    kernels = _SPELLING.get()[2]
    if kernels is None or keras.backend.standardize_dtype(dtype) not in KERNEL_DTYPES[kernel]:
        return None
    return kernels


def bias_add(x, bias):
    """``x + bias`` over the last axis: ``x`` ``(..., E)``, ``bias`` ``(E,)``.

    On TensorFlow one ``BiasAdd`` op. Spelled ``x + bias`` (``AddV2``), a
    GEMM's output plus its bias plus a residual is a chain of two adds that
    Grappler's arithmetic optimiser regroups into an ``AddN`` of the product
    and the residual: the GEMM then runs bare and both adds as kernels of
    their own. With ``BiasAdd`` the remapper fuses the bias and the residual
    add into the oneDNN GEMM.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.nn.bias_add(x, bias)
    return x + bias


def affine(x, kernel, bias):
    """``x @ kernel + bias`` over the last axis: ``(..., D) -> (..., E)``.

    A 2-D ``x`` is one MatMul and a ``bias_add``; any other rank one
    Einsum, which OpenVINO converts to one MatMul (``keras.ops.matmul``
    traces a Tensordot: Reshape, MatMul, Reshape). ``kernel`` ``(D, E)``
    and ``bias`` ``(E,)`` are cast to ``x``'s dtype.
    """
    kernel, bias = ops.cast(kernel, x.dtype), ops.cast(bias, x.dtype)
    if len(x.shape) == 2:
        return bias_add(ops.matmul(x, kernel), bias)
    batch = "abcxyz"[: len(x.shape) - 1]  # explicit letters: an ellipsis traces broadcasts
    return ops.einsum(f"{batch}d,de->{batch}e", x, kernel) + bias


def rows_like(x, matrix):
    """``x`` ``(..., D)`` reshaped to the shape of ``matrix`` ``(n, D)`` (same size).

    On TensorFlow to ``tf.shape(matrix)``: Grappler's shape inference then
    knows that the two have the same (dynamic) number of rows, which a
    reshape to ``(-1, D)`` does not tell it (each is a new unknown size). A
    GEMM of ``x`` added to ``matrix`` is then an add without broadcast, the
    condition for fusing it into the GEMM.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.reshape(x, tf.shape(matrix))
    return ops.reshape(x, ops.shape(matrix))


#: The block GEMMs that ``spelled_for("onednn")`` runs as 1x1 convolutions, by
#: compute dtype (``block_affine``): where oneDNN's 1x1 convolution beat the
#: fused MatMul's inner product at ViT-B/16's shapes (an AVX512-BF16 AMD EPYC).
CONVOLUTION_GEMMS = {"bfloat16": ("mlp_output",), "float32": ("attention_output",)}
#: The block GEMMs that ``spelled_for("onednn", batch_size=1)`` runs as one
#: bare product with the bias inside (``augmented_affine``), by compute dtype:
#: where that beat the fused MatMul for one image and lost at batch 16.
AUGMENTED_GEMMS = {"bfloat16": ("qkv",)}
#: The GEMMs ``block_affine`` takes: the fused query/key/value projection, the
#: attention output projection and the MLP's second GEMM.
BLOCK_GEMMS = ("qkv", "attention_output", "mlp_output")


def block_affine(x, kernel, bias, gemm):
    """``affine`` of a block's GEMM ``gemm``: ``(n, D) -> (n, E)``.

    ``gemm`` is one of ``BLOCK_GEMMS``. Inside
    ``spelled_for("onednn")``, where ``CONVOLUTION_GEMMS`` lists it for the
    2-D ``x``'s dtype, it is a 1x1 ``Conv2D`` over the rows as one
    ``(1, n, 1, D)`` NHWC image, with a ``BiasAdd``: TensorFlow runs a
    MatMul fused with its bias (and a residual add) as oneDNN's inner-product
    kernel, and this convolution (``_MklNativeFusedConv2D``) as its 1x1
    brgemm convolution. Measured on ViT-B/16 at batch 1 (the frozen step):
    the bf16 MLP output GEMM, 197 x 3072 x 768, 2.1 ms a call against
    2.9-3.0 (the step 1.06x faster), and the float32 attention output
    projection, 197 x 768 x 768 (the step 1.018x faster); both level at
    batch 16. The same forms gained nothing elsewhere (bf16 QKV and output
    projection, float32 MLP), and the MLP's first GEMM keeps the MatMul,
    whose GELU the convolution does not fuse. The residual add after a
    convolution is an op of its own (0.05 ms at batch 1): with a dynamic
    batch Grappler cannot prove the convolution's rows the same as the
    stream's, the condition for fusing it. With the rows as the batch,
    ``(n, 1, 1, D)``, the convolution was 1.7x slower.

    Inside ``spelled_for("onednn", batch_size=1)``, a GEMM that
    ``AUGMENTED_GEMMS`` lists for the dtype is ``augmented_affine``: the
    bf16 QKV product as a bare MatMul made the frozen ViT-B/16 step 1.029x
    faster at batch 1 and 0.986x as fast at batch 16 (float32: 0.992x at
    batch 1). Elsewhere ``affine(x, kernel, bias)``.
    """
    if gemm not in BLOCK_GEMMS:
        raise ValueError(f"gemm must be one of {BLOCK_GEMMS}; got {gemm!r}.")
    dtype = keras.backend.standardize_dtype(x.dtype)
    if spelling() != "onednn" or len(x.shape) != 2:
        return affine(x, kernel, bias)
    if gemm in CONVOLUTION_GEMMS.get(dtype, ()):
        return convolution_affine(x, kernel, bias)
    if spelled_batch_size() == 1 and gemm in AUGMENTED_GEMMS.get(dtype, ()):
        return augmented_affine(x, kernel, bias)
    return affine(x, kernel, bias)


def augmented_affine(x, kernel, bias):
    """``x @ kernel + bias`` as one bare MatMul: ``[x, 1] @ [kernel; bias]``, ``(n, D) -> (n, E)``.

    A column of ones is appended to ``x`` and ``bias`` ``(E,)`` as a row to
    ``kernel`` ``(D, E)`` (both cast to ``x``'s dtype), so the bias is summed
    in the product's float32 accumulator, as a fused bias is. With no bias
    op after it, TensorFlow runs the product as oneDNN's matmul kernel
    instead of the fused MatMul's inner product (see ``block_affine``).
    TensorFlow backend only.
    """
    import tensorflow as tf

    kernel, bias = ops.cast(kernel, x.dtype), ops.cast(bias, x.dtype)
    ones = tf.ones_like(x[:, :1])
    return tf.matmul(tf.concat([x, ones], axis=-1), tf.concat([kernel, bias[None, :]], axis=0))


def convolution_affine(x, kernel, bias):
    """``x @ kernel + bias`` as a 1x1 convolution: ``(n, D) -> (n, E)``.

    The rows of ``x`` are one ``(1, n, 1, D)`` NHWC image, ``kernel``
    ``(D, E)`` a ``(1, 1, D, E)`` filter: a ``Conv2D`` and a ``BiasAdd``,
    which TensorFlow's oneDNN runs as one fused 1x1 convolution (see
    ``block_affine``). ``kernel`` and ``bias`` ``(E,)`` are cast to ``x``'s
    dtype. TensorFlow backend only.
    """
    import tensorflow as tf

    kernel, bias = ops.cast(kernel, x.dtype), ops.cast(bias, x.dtype)
    image = tf.reshape(x, (1, -1, 1, x.shape[-1]))
    filters = tf.reshape(kernel, (1, 1, *kernel.shape))
    y = tf.nn.bias_add(tf.nn.conv2d(image, filters, strides=1, padding="VALID"), bias)
    return tf.reshape(y, (-1, kernel.shape[-1]))


def layer_norm(x, gamma, beta, epsilon, dtype=None):
    """LayerNorm over the last axis, statistics in (at least) float32: ``(..., D) -> (..., D)``.

    ``(x - mean) * rsqrt(var + epsilon) * gamma + beta``, the variance taken
    of the centred values; returned in ``dtype`` (``x``'s by default). The same numbers as
    ``keras.ops.layer_normalization``, but on TensorFlow 1.6x faster without
    XLA: that spelling broadcasts ``rsqrt(var) * gamma`` to a full-size
    tensor and makes more passes over it. TFLite's int8 kernels need the
    ``rsqrt``: its int8 ``DIV`` refuses a denominator at the zero point.

    Inside ``spelled_for("onednn")`` the normalisation is a
    ``FusedBatchNormV3`` over rows (``_normalized_by_fused_batch_norm``),
    which TensorFlow's oneDNN remapper fuses with the ``* gamma + beta``
    into one kernel (where Grappler has not folded an identity gamma and
    beta away first, as in a freshly initialised model). That kernel takes
    its statistics and applies the scale and offset in float32 for a
    bfloat16 input too and rounds once, so there the input is not cast:
    a bfloat16 LayerNorm is one pass in bfloat16 instead of a cast, a
    float32 kernel and a cast back (the ``bfloat16`` policy's ``freeze``).
    Unfused (eager), a bfloat16 input is rounded after the normalisation
    and after the scale and offset (bfloat16 ops).

    With keras-vit's CPU kernels in the graph (``native_kernels``), a
    float32 or bfloat16 LayerNorm is one ``KerasVitLayerNorm`` op instead:
    the same statistics, scale and offset in float32 and one rounding of a
    bfloat16 output (a float32 ``x`` normalised to bfloat16 without a cast),
    without ``_MklLayerNorm``'s per-call setup.

    Inside ``spelled_for("openvino")`` it is spelled
    ``(x - mean) * reciprocal(sqrt(var + epsilon))`` with the statistics over
    a 1-D axes list: the pattern OpenVINO's ``MVNFusion`` turns into one
    ``MVN`` kernel (with ``rsqrt`` each LayerNorm stayed Reduce + RMS +
    Eltwise kernels; with a scalar axis OpenVINO 2026.4's converter fails
    inside that fusion).

    Args:
        x: tensor ``(..., D)``.
        gamma, beta: ``(D,)`` scale and offset.
        epsilon: float. Added to the variance.
        dtype: optional dtype of the result; ``x``'s by default.
    """
    dtype = keras.backend.standardize_dtype(dtype or x.dtype)
    kernels = native_kernels(x.dtype, "layer_norm")
    if kernels is not None:
        float32 = [ops.cast(weight, "float32") for weight in (gamma, beta)]
        return kernels.keras_vit_layer_norm(x, *float32, epsilon=epsilon, U=dtype)
    return ops.cast(_layer_norm(x, gamma, beta, epsilon), dtype)


def add_layer_norm(stream, branch, gamma, beta, epsilon, dtype):
    """A residual add and the LayerNorm after it: ``(sum, layer_norm(sum))``.

    ``branch`` is cast to ``stream``'s dtype; the sum is returned in that
    dtype and its LayerNorm in ``dtype``, both ``(..., D)``. With keras-vit's
    CPU kernels in the graph (a float32 ``stream``), both are one
    ``KerasVitAddLayerNorm`` op, one pass over each row instead of a cast, an
    add, the LayerNorm and a cast of its output.
    """
    kernels = native_kernels(stream.dtype, "add_layer_norm")
    if kernels is not None:
        float32 = [ops.cast(weight, "float32") for weight in (gamma, beta)]
        return kernels.keras_vit_add_layer_norm(
            stream, branch, *float32, epsilon=epsilon, U=keras.backend.standardize_dtype(dtype)
        )
    total = stream + ops.cast(branch, stream.dtype)
    return total, layer_norm(total, gamma, beta, epsilon, dtype)


def _layer_norm(x, gamma, beta, epsilon):
    """``layer_norm`` in TensorFlow's or Keras's ops, returned in ``x``'s dtype."""
    dtype = x.dtype
    if spelling() == "onednn":
        y = _normalized_by_fused_batch_norm(x, epsilon)
        return y * ops.cast(gamma, dtype) + ops.cast(beta, dtype)
    compute_dtype = keras.backend.result_type(dtype, "float32")
    x = ops.cast(x, compute_dtype)
    last = (-1,)  # a 1-D axes list (see above)
    mean = ops.mean(x, axis=last, keepdims=True)
    centred = x - mean
    variance = ops.mean(ops.square(centred), axis=last, keepdims=True)
    if spelling() == "openvino":
        y = centred * ops.reciprocal(ops.sqrt(variance + epsilon))
    else:
        y = centred * ops.rsqrt(variance + epsilon)
    return ops.cast(y * ops.cast(gamma, compute_dtype) + ops.cast(beta, compute_dtype), dtype)


def _normalized_by_fused_batch_norm(x, epsilon):
    """``(x - mean) / sqrt(var + epsilon)`` over the last axis, as TensorFlow's oneDNN fuses it.

    Each row of ``x`` ``(..., D)`` is a channel of a ``(1, rows, D, 1)``
    NCHW batch normalised with batch statistics (``FusedBatchNormV3``,
    training mode, unit scale, zero offset): the Keras 2 spelling that
    Grappler's remapper rewrites, with the ``* gamma + beta`` after it, into
    one ``_MklLayerNorm`` kernel (no spelling with Mean / Rsqrt ops is
    matched on TensorFlow 2.21). The unit scale and zero offset are float32,
    as ``FusedBatchNormV3`` takes them for a bfloat16 ``x`` too. TensorFlow
    backend only.
    """
    import tensorflow as tf

    shape = tf.shape(x)
    rows = tf.reduce_prod(shape[:-1], keepdims=True)
    normalized, _, _ = tf.compat.v1.nn.fused_batch_norm(
        tf.reshape(x, tf.concat([[1], rows, shape[-1:], [1]], axis=0)),
        scale=tf.fill(rows, tf.constant(1.0, tf.float32)),
        offset=tf.fill(rows, tf.constant(0.0, tf.float32)),
        epsilon=epsilon,
        data_format="NCHW",
        is_training=True,
    )
    return tf.reshape(normalized, shape)


# Element-wise regions that run as one XLA cluster each in training; ``gelu``
# is looked up per call, so it stays the one definition.
fused_gelu = fused_in_training(lambda x, approximate: gelu(x, approximate))
fused_softmax = fused_in_training(softmax_float32)
fused_layer_norm = fused_in_training(layer_norm)
