"""Vision Transformer building blocks, written with ``keras.ops`` only.

Weights are stored in the layout of the official checkpoints (and named like
them), so a checkpoint tensor is assigned without reshapes:

==========================================  ==========================
official path                               layer / weight
==========================================  ==========================
``embedding/{kernel,bias}``                 ``PatchEncoder``
``cls``                                     ``ClassToken``
``Transformer/posembed_input/pos_embedding`` ``AddPositionEmbs``
``.../MultiHeadDotProductAttention_1/...``  ``MultiHeadSelfAttention``
``.../MlpBlock_3/Dense_{0,1}``              ``MlpBlock``
``Transformer/encoderblock_{i}``            ``TransformerBlock``
==========================================  ==========================
"""

from __future__ import annotations

import math

import keras
from keras import initializers, layers, ops

from keras_vit.model.ops import fused_gelu, fused_layer_norm, fused_softmax
from keras_vit.model.posemb import POSEMB_INTERPOLATIONS, resize_position_embedding
from keras_vit.validation import pair

_PACKAGE = "keras_vit"
_QKV = ("query", "key", "value")


class ResidualStreamInput:
    """Mixin: a layer of the residual stream takes its inputs in the variable dtype.

    Keras casts a layer's inputs to its compute dtype (``bfloat16`` under
    ``mixed_bfloat16``). The layers that carry the residual stream
    ``(B, T, D)`` (class token, position embeddings, encoder blocks) take it
    in the variable dtype, ``float32``, instead: the stream is summed in
    float32 over all blocks and LayerNorm (which Keras never autocasts)
    takes its statistics of unrounded values, while the GEMMs of attention
    and the MLP still take ``bfloat16`` operands. Against a bfloat16 stream
    (``benchmarks/accuracy.py`` models, logits vs float32): mean error 18 %
    lower on a random ViT-B/16 at 224, 13 % on the trained digits ViT, at
    the same speed. Without a mixed policy this changes nothing.
    """

    @property
    def input_dtype(self):
        return self.variable_dtype


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LayerNorm(layers.LayerNormalization):
    """``keras.layers.LayerNormalization`` over the last axis, faster on TensorFlow.

    ``(..., D) -> (..., D)``; like the Keras layer it does not cast its input,
    so under mixed precision it reads the float32 residual stream, computes
    float32 statistics and returns the compute dtype, ready for the next
    GEMM. Same weights (``gamma``, ``beta``) and numbers as the Keras layer. On
    TensorFlow it computes ``layer_norm`` (fewer passes over memory), and in
    training the normalisation and its gradient run as one XLA cluster
    (``keras_vit.model.ops``); other backends use the Keras layer as it is
    (PyTorch has a fused kernel for it).
    """

    def call(self, inputs, training=None):
        axes = self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]
        last_axis = list(axes) in ([-1], [len(inputs.shape) - 1])
        plain = self.rms_scaling or not (self.center and self.scale) or not last_axis
        if plain or keras.backend.backend() != "tensorflow":
            return super().call(inputs)
        outputs = fused_layer_norm(inputs, self.gamma, self.beta, self.epsilon, training=training)
        return ops.cast(outputs, self.compute_dtype)


def _fan_initializer(initializer, fan_shape):
    """Initialises a weight as if it were a matrix of ``fan_shape``.

    Attention kernels are stored as ``(hidden, heads, head_dim)``; Glorot
    must see them as the ``(hidden, heads * head_dim)`` matrix they are.
    """
    base = initializers.get(initializer)

    def init(shape, dtype=None):
        return ops.reshape(base(fan_shape, dtype=dtype), shape)

    return init


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PatchEncoder(layers.Layer):
    """Cuts images into patches and embeds each: ``(B, H, W, C) -> (B, N, D)``.

    Equal to a convolution with kernel = stride = ``patch_size`` and valid
    padding, flattened row-major to ``N = (H / P) * (W / P)`` tokens, and
    stored as one (the official ``(P, P, C, D)`` kernel). It is computed as
    what it is, one GEMM: the patches are cut with a reshape and a transpose
    to ``(B N, P P C)`` and multiplied by the flattened kernel. In training
    the kernel gradient is then one more GEMM, about 4x faster on oneDNN
    than the strided convolution's filter gradient, and an empty batch
    stays empty.

    Args:
        hidden_size: int. Embedding width ``D``.
        patch_size: int or (int, int). Patch height and width ``P``.
    """

    def __init__(self, hidden_size, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = int(hidden_size)
        self.patch_size = pair(patch_size, "patch_size")

    def build(self, input_shape):
        channels = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.patch_size, channels, self.hidden_size),
            initializer="lecun_normal",
        )
        self.bias = self.add_weight(name="bias", shape=(self.hidden_size,), initializer="zeros")

    def call(self, images):
        (p, q), channels = self.patch_size, images.shape[-1]
        batch, height, width = ops.shape(images)[:3]
        rows, cols = height // p, width // q
        if not all(isinstance(s, int) and s % n == 0 for s, n in ((height, p), (width, q))):
            images = images[:, : rows * p, : cols * q, :]  # valid padding: drop the rest
        patches = ops.reshape(images, (batch, rows, p, cols, q, channels))
        patches = ops.transpose(patches, (0, 1, 3, 2, 4, 5))
        patches = ops.reshape(patches, (-1, p * q * channels))
        kernel = ops.reshape(self.kernel, (p * q * channels, self.hidden_size))
        bias = ops.cast(self.bias, patches.dtype)
        x = ops.matmul(patches, ops.cast(kernel, patches.dtype)) + bias
        return ops.reshape(x, (batch, rows * cols, self.hidden_size))

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        tokens = None
        if h is not None and w is not None:
            tokens = (h // self.patch_size[0]) * (w // self.patch_size[1])
        return (input_shape[0], tokens, self.hidden_size)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_size": self.hidden_size,
            "patch_size": self.patch_size,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClassToken(ResidualStreamInput, layers.Layer):
    """Prepends one learned token: ``(B, N, D) -> (B, 1 + N, D)``.

    Initialised with zeros, as in the official code. Part of the residual
    stream: float32 in and out under mixed precision.
    """

    def build(self, input_shape):
        self.cls = self.add_weight(
            name="cls", shape=(1, 1, input_shape[-1]), initializer="zeros", autocast=False
        )

    def call(self, tokens):
        cls = ops.cast(self.cls, tokens.dtype)
        cls = ops.broadcast_to(cls, (ops.shape(tokens)[0], 1, ops.shape(tokens)[2]))
        return ops.concatenate([cls, tokens], axis=1)

    def compute_output_shape(self, input_shape):
        tokens = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], tokens, input_shape[2])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AddPositionEmbs(ResidualStreamInput, layers.Layer):
    """Adds learned position embeddings: ``(B, T, D) -> (B, T, D)``.

    Part of the residual stream: float32 in and out under mixed precision.

    The stored embedding is ``(1, num_prefix_tokens + rows * cols, D)``,
    initialised normal(stddev 0.02). When called on a different patch grid
    (``grid_shape`` given and different from ``grid_size``, or symbolic) the
    grid part is resized in the graph with ``resize_position_embedding``
    (an identity when the sizes agree); the prefix (class-token) entries are
    kept as they are.

    Args:
        grid_size: (int, int). Patch grid ``(rows, cols)`` of the stored
            embedding.
        num_prefix_tokens: int. 1 with a class token, 0 without.
        interpolation: str. Resize method used for other grids, one of
            ``POSEMB_INTERPOLATIONS``.
    """

    def __init__(self, grid_size, num_prefix_tokens=1, interpolation="official", **kwargs):
        super().__init__(**kwargs)
        if interpolation not in POSEMB_INTERPOLATIONS:
            raise ValueError(
                f"posemb_interpolation must be one of {POSEMB_INTERPOLATIONS}, "
                f"got {interpolation!r}."
            )
        self.grid_size = pair(grid_size, "grid_size")
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.interpolation = interpolation

    def build(self, input_shape):
        rows, cols = self.grid_size
        self.pos_embedding = self.add_weight(
            name="pos_embedding",
            shape=(1, self.num_prefix_tokens + rows * cols, input_shape[-1]),
            initializer=initializers.RandomNormal(stddev=0.02),
            autocast=False,
        )

    def call(self, tokens, grid_shape=None):
        posemb = self.pos_embedding
        static = grid_shape is not None and all(isinstance(s, int) for s in grid_shape)
        if grid_shape is not None and not (static and tuple(grid_shape) == self.grid_size):
            posemb = resize_position_embedding(
                posemb,
                grid_shape,
                num_prefix_tokens=self.num_prefix_tokens,
                method=self.interpolation,
                source_grid_shape=self.grid_size,
            )
        return tokens + ops.cast(posemb, tokens.dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "grid_size": self.grid_size,
            "num_prefix_tokens": self.num_prefix_tokens,
            "interpolation": self.interpolation,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MultiHeadSelfAttention(layers.Layer):
    """Multi-head self-attention: ``(B, T, D) -> (B, T, D)``.

    Kernels in the official layout: ``query``/``key``/``value`` kernels
    ``(D, heads, head_dim)`` with biases ``(heads, head_dim)``, ``out``
    kernel ``(heads, head_dim, D)`` with bias ``(D,)``. The projection is
    one fused QKV GEMM. Attention then takes one of two paths, both with
    the softmax in float32 under mixed precision:

    - ``keras.ops.dot_product_attention`` (the fused kernels of the JAX and
      PyTorch backends, e.g. cuDNN flash attention) when the weights are not
      asked for and no attention dropout applies;
    - the explicit head-major path otherwise, and always on the TensorFlow
      backend: there that op is the same einsum/softmax/einsum (no fused
      kernel; ``flash_attention`` is rejected) and, in its
      ``(B, T, heads, head_dim)`` layout, costs four transposes per block
      instead of two. It returns the weights ``(B, heads, T, T)`` for
      ``return_attention_scores``.

    Args:
        num_heads: int. Number of attention heads; must divide ``D``.
        dropout_rate: float. Dropout on the attention weights in training.
    """

    def __init__(self, num_heads, dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.dropout_rate = float(dropout_rate)
        self.attention_dropout = layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)

    def build(self, input_shape):
        hidden = input_shape[-1]
        if hidden % self.num_heads:
            raise ValueError(
                f"hidden size {hidden} is not divisible by num_heads={self.num_heads}."
            )
        head_dim = hidden // self.num_heads
        qkv_shape = (hidden, self.num_heads, head_dim)
        glorot_in = _fan_initializer("glorot_uniform", (hidden, hidden))
        for name in _QKV:
            kernel = self.add_weight(name=f"{name}_kernel", shape=qkv_shape, initializer=glorot_in)
            bias = self.add_weight(
                name=f"{name}_bias",
                shape=(self.num_heads, head_dim),
                initializer="zeros",
            )
            setattr(self, f"{name}_kernel", kernel)
            setattr(self, f"{name}_bias", bias)
        self.out_kernel = self.add_weight(
            name="out_kernel",
            shape=(self.num_heads, head_dim, hidden),
            initializer=_fan_initializer("glorot_uniform", (hidden, hidden)),
        )
        self.out_bias = self.add_weight(name="out_bias", shape=(hidden,), initializer="zeros")
        self.head_dim = head_dim

    def _project(self, x):
        """Fused projection: ``(B, T, D) -> (B, T, 3, heads, head_dim)``.

        The three official kernels are concatenated into one ``(D, 3 D)``
        matrix (the query part pre-scaled by ``1 / sqrt(head_dim)``, exact
        for power-of-two head sizes), so the projection is one 2-D GEMM whose
        bias add oneDNN fuses, instead of three batched products.
        """
        hidden = self.num_heads * self.head_dim
        scale = 1.0 / math.sqrt(self.head_dim)
        kernels, biases = [], []
        for name in _QKV:
            kernel = ops.reshape(getattr(self, f"{name}_kernel"), (-1, hidden))
            bias = ops.reshape(getattr(self, f"{name}_bias"), (hidden,))
            if name == "query":
                kernel, bias = kernel * scale, bias * scale
            kernels.append(kernel)
            biases.append(bias)
        kernel = ops.cast(ops.concatenate(kernels, axis=-1), x.dtype)
        bias = ops.cast(ops.concatenate(biases, axis=0), x.dtype)
        batch, tokens = ops.shape(x)[0], ops.shape(x)[1]
        qkv = ops.matmul(ops.reshape(x, (-1, hidden)), kernel) + bias
        return ops.reshape(qkv, (batch, tokens, 3, self.num_heads, self.head_dim))

    def call(self, x, training=None, return_attention_scores=False):
        batch, tokens = ops.shape(x)[0], ops.shape(x)[1]
        hidden = self.num_heads * self.head_dim
        qkv = self._project(x)
        explicit = (
            return_attention_scores
            or (training and self.dropout_rate > 0)
            or keras.backend.backend() == "tensorflow"
        )
        if explicit:
            q, k, v = ops.unstack(ops.transpose(qkv, (2, 0, 3, 1, 4)), num=3)
            logits = ops.einsum("bhqk,bhsk->bhqs", q, k)
            if return_attention_scores:
                scores = ops.softmax(ops.cast(logits, "float32"), axis=-1)
                probs = ops.cast(scores, v.dtype)
            else:
                probs = fused_softmax(logits, training=training)
            probs = self.attention_dropout(probs, training=training)
            context = ops.transpose(ops.einsum("bhqs,bhsk->bhqk", probs, v), (0, 2, 1, 3))
        else:  # the query is pre-scaled in _project
            q, k, v = ops.unstack(qkv, num=3, axis=2)
            context = ops.dot_product_attention(q, k, v, scale=1.0)
        context = ops.reshape(context, (-1, hidden))
        kernel = ops.cast(ops.reshape(self.out_kernel, (hidden, hidden)), x.dtype)
        out = ops.matmul(context, kernel) + ops.cast(self.out_bias, x.dtype)
        out = ops.reshape(out, (batch, tokens, hidden))
        if return_attention_scores:
            return out, scores
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "dropout_rate": self.dropout_rate,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MlpBlock(layers.Layer):
    """Transformer MLP: Dense -> GELU -> dropout -> Dense -> dropout.

    ``(B, T, D) -> (B, T, D)`` through a hidden width ``mlp_dim``. Kernels are
    Glorot-uniform, biases normal(1e-6), as in the official code.

    Args:
        mlp_dim: int. Hidden width.
        dropout_rate: float. Dropout after each Dense in training.
        approximate_gelu: bool. tanh-approximate GELU (official JAX numerics).
    """

    def __init__(self, mlp_dim, dropout_rate=0.0, approximate_gelu=False, **kwargs):
        super().__init__(**kwargs)
        self.mlp_dim = int(mlp_dim)
        self.dropout_rate = float(dropout_rate)
        self.approximate_gelu = bool(approximate_gelu)
        dense_args = dict(
            kernel_initializer="glorot_uniform",
            bias_initializer=initializers.RandomNormal(stddev=1e-6),
            dtype=self.dtype_policy,
        )
        self.dense_0 = layers.Dense(self.mlp_dim, name="Dense_0", **dense_args)
        self.dense_1 = None
        self.dense_args = dense_args
        self.dropout = layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.dense_1 = layers.Dense(input_shape[-1], name="Dense_1", **self.dense_args)
        self.dense_0.build(input_shape)
        self.dense_1.build((*input_shape[:-1], self.mlp_dim))

    def call(self, x, training=None):
        shape = ops.shape(x)
        # On 2-D tokens each Dense is one MatMul + BiasAdd, which oneDNN
        # fuses with the GELU that follows (a 3-D Dense is a Tensordot).
        x = ops.reshape(x, (-1, shape[-1]))
        x = fused_gelu(self.dense_0(x), self.approximate_gelu, training=training)
        x = self.dropout(x, training=training)
        x = self.dropout(self.dense_1(x), training=training)
        return ops.reshape(x, shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "mlp_dim": self.mlp_dim,
            "dropout_rate": self.dropout_rate,
            "approximate_gelu": self.approximate_gelu,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TransformerBlock(ResidualStreamInput, layers.Layer):
    """Pre-LayerNorm encoder block: ``(B, T, D) -> (B, T, D)``.

    ``x + MSA(LN(x))`` then ``x + MLP(LN(x))``, each residual branch passed
    through stochastic depth (per-sample drop path) in training. Under
    mixed precision the stream ``x`` stays float32 (``ResidualStreamInput``)
    and the branches, computed in the compute dtype, are added to it.

    Args:
        num_heads: int. Attention heads.
        mlp_dim: int. MLP hidden width.
        dropout_rate: float. Dropout after the attention output and the MLP
            Dense layers.
        attention_dropout_rate: float. Dropout on the attention weights.
        drop_path_rate: float. Probability of dropping a residual branch
            for a sample (stochastic depth).
        layer_norm_epsilon: float. LayerNorm epsilon (1e-6 official, 1e-12
            in Hugging Face checkpoints).
        approximate_gelu: bool. tanh-approximate GELU.
    """

    def __init__(
        self,
        num_heads,
        mlp_dim,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        approximate_gelu=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.mlp_dim = int(mlp_dim)
        self.dropout_rate = float(dropout_rate)
        self.attention_dropout_rate = float(attention_dropout_rate)
        self.drop_path_rate = float(drop_path_rate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.approximate_gelu = bool(approximate_gelu)
        policy = self.dtype_policy
        self.norm_attention = LayerNorm(
            epsilon=self.layer_norm_epsilon, name="LayerNorm_0", dtype=policy
        )
        self.attention = MultiHeadSelfAttention(
            self.num_heads,
            self.attention_dropout_rate,
            name="MultiHeadDotProductAttention_1",
            dtype=policy,
        )
        self.attention_output_dropout = layers.Dropout(self.dropout_rate, dtype=policy)
        self.norm_mlp = LayerNorm(epsilon=self.layer_norm_epsilon, name="LayerNorm_2", dtype=policy)
        self.mlp = MlpBlock(
            self.mlp_dim,
            self.dropout_rate,
            self.approximate_gelu,
            name="MlpBlock_3",
            dtype=policy,
        )
        self.seed_generator = keras.random.SeedGenerator()

    def build(self, input_shape):
        for layer in (self.norm_attention, self.attention, self.norm_mlp, self.mlp):
            layer.build(input_shape)

    def _drop_path(self, x, training):
        if not training or self.drop_path_rate == 0.0:
            return x
        keep = 1.0 - self.drop_path_rate
        noise = keras.random.uniform(
            (ops.shape(x)[0], 1, 1), seed=self.seed_generator, dtype=x.dtype
        )
        return x / keep * ops.floor(keep + noise)

    def call(self, x, training=None, return_attention_scores=False):
        y = self.attention(
            self.norm_attention(x),
            training=training,
            return_attention_scores=return_attention_scores,
        )
        if return_attention_scores:
            y, scores = y
        y = self.attention_output_dropout(y, training=training)
        x = x + ops.cast(self._drop_path(y, training), x.dtype)
        y = self.mlp(self.norm_mlp(x), training=training)
        x = x + ops.cast(self._drop_path(y, training), x.dtype)
        if return_attention_scores:
            return x, scores
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "dropout_rate": self.dropout_rate,
            "attention_dropout_rate": self.attention_dropout_rate,
            "drop_path_rate": self.drop_path_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "approximate_gelu": self.approximate_gelu,
        }
