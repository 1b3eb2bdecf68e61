"""The token layers of a Vision Transformer, written with ``keras.ops`` only.

From pixels to the residual stream: ``PatchEncoder`` (patch embedding),
``ClassToken`` and ``PrefixTokens`` (class, distillation and register
tokens), ``AddPositionEmbs`` (learned, resizable) and
``AddSinCosPositionEmbs`` (fixed 2-D sin-cos), plus the ``LayerNorm`` and
the float32 residual-stream rule every layer of the stream follows. The
encoder blocks and pooling heads are in ``keras_vit.model.blocks``.

Weights are stored in the layout of the official checkpoints (and named like
them), so a checkpoint tensor is assigned without reshapes:

==========================================  ==========================
official path                               layer / weight
==========================================  ==========================
``embedding/{kernel,bias}``                 ``PatchEncoder``
``cls``                                     ``ClassToken``
``Transformer/posembed_input/pos_embedding`` ``AddPositionEmbs``
==========================================  ==========================
"""

from __future__ import annotations

import keras
from keras import initializers, layers, ops

from keras_vit.model.ops import add_layer_norm, affine, fused_layer_norm
from keras_vit.model.posemb import (
    POSEMB_INTERPOLATIONS,
    resize_position_embedding,
    sincos_position_embedding,
)
from keras_vit.validation import integer, number, pair

_PACKAGE = "keras_vit"


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
        if not self._is_fusable(inputs) or keras.backend.backend() != "tensorflow":
            return super().call(inputs)
        return fused_layer_norm(
            inputs, self.gamma, self.beta, self.epsilon, self.compute_dtype, training=training
        )

    def added(self, stream, branch):
        """The residual ``stream + branch`` and its LayerNorm, both ``(..., D)``.

        ``branch`` is cast to ``stream``'s dtype; the LayerNorm is returned in
        the compute dtype (``keras_vit.model.ops.add_layer_norm``: one op with
        keras-vit's CPU kernels). TensorFlow backend; the layer normalises
        the last axis with scale and offset, as ``TransformerBlock`` builds it.
        """
        return add_layer_norm(
            stream, branch, self.gamma, self.beta, self.epsilon, self.compute_dtype
        )

    def _is_fusable(self, inputs):
        """Whether this is a plain LayerNorm over the last axis, with scale and offset."""
        axes = self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]
        last_axis = list(axes) in ([-1], [len(inputs.shape) - 1])
        return last_axis and self.center and self.scale and not self.rms_scaling


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
        height, width = ops.shape(images)[1:3]
        rows, cols = height // p, width // q
        if not all(isinstance(s, int) and s % n == 0 for s, n in ((height, p), (width, q))):
            images = images[:, : rows * p, : cols * q, :]  # valid padding: drop the rest
        patches = ops.reshape(images, (-1, rows, p, cols, q, channels))
        patches = ops.transpose(patches, (0, 1, 3, 2, 4, 5))
        patches = ops.reshape(patches, (-1, p * q * channels))
        kernel = ops.reshape(self.kernel, (p * q * channels, self.hidden_size))
        x = affine(patches, kernel, self.bias)
        return ops.reshape(x, (-1, rows * cols, self.hidden_size))

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
class PrefixTokens(ResidualStreamInput, layers.Layer):
    """Prepends ``num_tokens`` learned tokens: ``(B, N, D) -> (B, num_tokens + N, D)``.

    The distillation token of DeiT and the register tokens of "Vision
    Transformers need registers" (DINOv2); ``ClassToken`` is the one-token
    case with the official name and zero initialisation. Part of the
    residual stream: float32 in and out under mixed precision.

    Args:
        num_tokens: int. Tokens to prepend (>= 1).
        initializer: initializer of the ``tokens`` weight ``(1, num_tokens, D)``.
    """

    weight_name = "tokens"

    def __init__(self, num_tokens=1, initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.num_tokens = integer(num_tokens, "num_tokens", minimum=1)
        self.initializer = initializers.get(initializer)

    def build(self, input_shape):
        self.tokens = self.add_weight(
            name=self.weight_name,
            shape=(1, self.num_tokens, input_shape[-1]),
            initializer=self.initializer,
            autocast=False,
        )

    def call(self, tokens):
        prefix = ops.cast(self.tokens, tokens.dtype)
        batch, width = ops.shape(tokens)[0], ops.shape(tokens)[2]
        prefix = ops.broadcast_to(prefix, (batch, self.num_tokens, width))
        return ops.concatenate([prefix, tokens], axis=1)

    def compute_output_shape(self, input_shape):
        tokens = None if input_shape[1] is None else input_shape[1] + self.num_tokens
        return (input_shape[0], tokens, input_shape[2])

    def get_config(self):
        return {
            **super().get_config(),
            "num_tokens": self.num_tokens,
            "initializer": initializers.serialize(self.initializer),
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClassToken(PrefixTokens):
    """Prepends one learned class token: ``(B, N, D) -> (B, 1 + N, D)``.

    Initialised with zeros and named ``cls``, as in the official code.
    """

    weight_name = "cls"

    def __init__(self, **kwargs):
        kwargs.pop("num_tokens", None)
        kwargs.pop("initializer", None)
        super().__init__(num_tokens=1, initializer="zeros", **kwargs)

    @property
    def cls(self):
        """The token ``(1, 1, D)``."""
        return self.tokens

    def get_config(self):
        config = super().get_config()
        del config["num_tokens"], config["initializer"]
        return config


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
class AddSinCosPositionEmbs(ResidualStreamInput, layers.Layer):
    """Adds fixed 2-D sin-cos position embeddings of the patch grid: ``(B, N, D) -> (B, N, D)``.

    big_vision's ``posemb_sincos_2d`` (MoCo v3): no weights; the table is
    computed for the grid the layer is called on (``sincos_position_embedding``),
    so another resolution recomputes it rather than interpolating. Applied to
    the patch tokens before any prefix token is prepended.

    Args:
        temperature: float. Frequency base (10,000 in big_vision).
    """

    def __init__(self, temperature=10_000.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = number(temperature, "temperature", minimum=1.0)

    def build(self, input_shape):
        if input_shape[-1] % 4:
            raise ValueError(
                f"sin-cos position embeddings need a width divisible by 4, got {input_shape[-1]}."
            )

    def call(self, tokens, grid_shape):
        table = sincos_position_embedding(grid_shape, tokens.shape[-1], self.temperature)
        return tokens + ops.cast(table, tokens.dtype)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
