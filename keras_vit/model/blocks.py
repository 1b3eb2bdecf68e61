"""Encoder blocks and pooling heads of a Vision Transformer, written with ``keras.ops`` only.

``TransformerBlock`` (pre-LayerNorm: ``x + ls1 * MSA(LN(x))``, ``x + ls2 *
MLP(LN(x))``, LayerScale optional) from ``MultiHeadSelfAttention``,
``MlpBlock`` and ``LayerScale``; ``MAPHead``, big_vision's multihead attention
pooling (a learned probe attends over the tokens).

Weights are in the official layout and named like the checkpoints:

==========================================  ==========================
official path                               layer / weight
==========================================  ==========================
``.../MultiHeadDotProductAttention_1/...``  ``MultiHeadSelfAttention``
``.../MlpBlock_3/Dense_{0,1}``              ``MlpBlock``
``Transformer/encoderblock_{i}``            ``TransformerBlock``
``MAPHead_0/...``                           ``MAPHead``
==========================================  ==========================
"""

from __future__ import annotations

import math

import keras
from keras import initializers, layers, ops

from keras_vit.model.layers import LayerNorm, ResidualStreamInput
from keras_vit.model.ops import (
    affine,
    block_affine,
    fused_gelu,
    fused_softmax,
    native_kernels,
    rows_like,
    spelling,
)
from keras_vit.validation import integer, number

_PACKAGE = "keras_vit"
_QKV = ("query", "key", "value")


def _fan_initializer(initializer, fan_shape):
    """Initialises a weight as if it were a matrix of ``fan_shape``.

    Attention kernels are stored as ``(hidden, heads, head_dim)``; Glorot
    must see them as the ``(hidden, heads * head_dim)`` matrix they are.
    Each call draws from a new ``initializer`` (a name): a Keras random
    initializer instance without a seed fixes one when it is made and
    returns the same values on every call, so weights sharing one instance
    (query, key and value) would start equal.
    """

    def init(shape, dtype=None):
        return ops.reshape(initializers.get(initializer)(fan_shape, dtype=dtype), shape)

    return init


def on_tokens(fn, x, residual=None):
    """``fn`` (GEMMs acting on the last axis) applied to tokens ``x``: ``(..., D) -> (..., E)``.

    By default the tokens are one ``(n, D)`` matrix: on TensorFlow a 2-D
    Dense is one MatMul + BiasAdd that oneDNN fuses with the activation
    after it (a 3-D one is a Tensordot). A ``residual`` (``x``'s shape, and
    ``E == D``) is added to that matrix, where oneDNN fuses the add into
    the GEMM too (added after the reshape back, it is a kernel of its own).
    The result is reshaped back with ``-1`` for the batch, so a static
    token count needs no shape arithmetic in the graph. Inside
    ``spelled_for("openvino")`` the tokens keep their shape: OpenVINO's
    GEMMs take 3-D tokens (and fuse the add themselves), and a Reshape
    between a LayerNorm and its GEMM stops the CPU plugin from fusing
    NNCF's int8 FakeQuantize into the LayerNorm.
    """
    if spelling() == "openvino":
        y = fn(x)
        return y if residual is None else residual + y
    shape = ops.shape(x)
    if residual is None:
        y = fn(ops.reshape(x, (-1, shape[-1])))
    else:
        stream = ops.reshape(residual, (-1, residual.shape[-1]))
        y = stream + fn(rows_like(x, stream))
    return ops.reshape(y, (-1, *shape[1:-1], ops.shape(y)[-1]))


def dense(layer, x):
    """A ``keras.layers.Dense`` (no activation) on ``x`` ``(..., D)``, as ``affine``."""
    return affine(x, layer.kernel, layer.bias)


def _head_major(x):
    """``(B, T, heads, head_dim) <-> (B, heads, T, head_dim)`` (its own inverse)."""
    return ops.transpose(x, (0, 2, 1, 3))


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

    def _project(self, x, names=_QKV, head_major=False):
        """Projections ``names`` of ``x`` ``(B, T, D)``, one tensor per name.

        Each is ``(B, T, heads, head_dim)``, or ``(B, heads, T, head_dim)``
        with ``head_major``. The query is pre-scaled by ``1 / sqrt(head_dim)``
        (exact for power-of-two head sizes). By default the official kernels
        of ``names`` are concatenated into one ``(D, k D)`` matrix, so the
        projection is one 2-D GEMM whose bias add oneDNN fuses (three GEMMs
        were 1.3-1.5x slower on TensorFlow; ``block_affine`` "qkv"), and
        head-major parts come from one transpose of its output, ``(B, T, k,
        heads, head_dim) -> (k, B, heads, T, head_dim)``, unstacked along its
        first axis (slices of one buffer; three transposes of unstacked
        copies before). Inside ``spelled_for("openvino")`` each is its own
        3-D GEMM (OpenVINO folds the kernels when it compiles; split from one
        GEMM, the query and key kept NNCF's int8 FakeQuantize ops out of the
        attention kernel).
        """
        heads = (-1, ops.shape(x)[1], self.num_heads, self.head_dim)
        if spelling() == "openvino":
            parts = [
                ops.reshape(affine(x, k, b), heads) for k, b in zip(*self._projection(x, names))
            ]
            return [_head_major(part) for part in parts] if head_major else parts
        projected = ops.reshape(
            self._fused_projection(x, names), (*heads[:2], len(names), *heads[2:])
        )
        if head_major:
            return ops.unstack(ops.transpose(projected, (2, 0, 3, 1, 4)), num=len(names), axis=0)
        return ops.unstack(projected, num=len(names), axis=2)

    def _projection(self, x, names):
        """Kernels ``(D, D)`` and biases ``(D,)`` of ``names``, ``x``'s dtype, query pre-scaled."""
        hidden = self.num_heads * self.head_dim
        scale = 1.0 / math.sqrt(self.head_dim)
        kernels, biases = [], []
        for name in names:
            kernel = ops.reshape(getattr(self, f"{name}_kernel"), (-1, hidden))
            bias = ops.reshape(getattr(self, f"{name}_bias"), (hidden,))
            if name == "query":
                kernel, bias = kernel * scale, bias * scale
            kernels.append(ops.cast(kernel, x.dtype))
            biases.append(ops.cast(bias, x.dtype))
        return kernels, biases

    def _fused_projection(self, x, names=_QKV):
        """``names``' projections of ``x`` ``(B, T, D)`` as one GEMM: ``(B, T, len(names) * D)``.

        Along the last axis: one projection after the other, each head after
        head (``head * head_dim + d``).
        """
        kernels, biases = self._projection(x, names)
        kernel, bias = ops.concatenate(kernels, axis=-1), ops.concatenate(biases, axis=0)
        return on_tokens(lambda tokens: block_affine(tokens, kernel, bias, "qkv"), x)

    def call(self, x, training=None, return_attention_scores=False, context=None, residual=None):
        """Attention of ``x`` over itself, or over ``context`` (keys and values) when given.

        Args:
            x: tensor ``(B, T, D)``: the queries (and keys and values without
                ``context``).
            training: bool. Attention dropout in training.
            return_attention_scores: bool. Also return the float32 weights
                ``(B, heads, T, S)``.
            context: optional tensor ``(B, S, D)``: keys and values (MAP
                pooling attends from a probe over the tokens).
            residual: optional tensor ``(B, T, D)`` added to the output
                (``on_tokens``: fused into the output GEMM).

        Returns:
            ``(B, T, D)``, and the weights with ``return_attention_scores``.
        """
        hidden = self.num_heads * self.head_dim
        kernels = native_kernels(x.dtype, "self_attention")
        scores = None
        if kernels is not None and context is None and not return_attention_scores:
            # keras-vit's CPU kernel (frozen float32 inference): no transposes.
            attended = kernels.keras_vit_self_attention(
                self._fused_projection(x), num_heads=self.num_heads
            )
        else:
            attended, scores = self._attended(x, context, training, return_attention_scores)
        attended = ops.reshape(attended, (-1, ops.shape(x)[1], hidden))
        kernel = ops.reshape(self.out_kernel, (hidden, hidden))
        out = on_tokens(
            lambda values: block_affine(values, kernel, self.out_bias, "attention_output"),
            attended,
            residual,
        )
        if return_attention_scores:
            return out, scores
        return out

    def _attended(self, x, context, training, return_attention_scores):
        """Attended values ``(B, T, heads, head_dim)`` and the weights (or None): see ``call``."""
        explicit = (
            return_attention_scores
            or (training and self.dropout_rate > 0)
            or keras.backend.backend() == "tensorflow"
        )
        scores = None
        if context is None:
            q, k, v = self._project(x, head_major=explicit)
        else:
            (q,) = self._project(x, ("query",), head_major=explicit)
            k, v = (
                ops.cast(part, x.dtype)
                for part in self._project(context, ("key", "value"), head_major=explicit)
            )
        if not explicit:  # the query is pre-scaled in _project
            return ops.dot_product_attention(q, k, v, scale=1.0), scores
        # head-major: (B, heads, tokens, head_dim)
        logits = ops.einsum("bhqk,bhsk->bhqs", q, k)
        if return_attention_scores:
            scores = ops.softmax(ops.cast(logits, "float32"), axis=-1)
            probs = ops.cast(scores, v.dtype)
        else:
            probs = fused_softmax(logits, training=training)
        probs = self.attention_dropout(probs, training=training)
        return _head_major(ops.einsum("bhqs,bhsk->bhqk", probs, v)), scores

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
        self.dense_0 = self._dense(self.mlp_dim, "Dense_0")
        self.dense_1 = None
        self.dropout = layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)

    def _dense(self, units, name):
        """A Dense of the block, with initializers of its own (see ``_fan_initializer``)."""
        return layers.Dense(
            units,
            name=name,
            kernel_initializer="glorot_uniform",
            bias_initializer=initializers.RandomNormal(stddev=1e-6),
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        self.dense_1 = self._dense(input_shape[-1], "Dense_1")
        self.dense_0.build(input_shape)
        self.dense_1.build((*input_shape[:-1], self.mlp_dim))

    def call(self, x, training=None, residual=None):
        """``(B, T, D) -> (B, T, D)``; ``residual`` ``(B, T, D)``, optional, is added to the output.

        The residual is added in ``on_tokens``'s 2-D layout, where oneDNN
        fuses the add into the second GEMM.
        """

        def mlp(tokens):
            hidden = dense(self.dense_0, tokens)
            hidden = fused_gelu(hidden, self.approximate_gelu, training=training)
            hidden = self.dropout(hidden, training=training)
            output = block_affine(hidden, self.dense_1.kernel, self.dense_1.bias, "mlp_output")
            return self.dropout(output, training=training)

        return on_tokens(mlp, x, residual)

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
class LayerScale(layers.Layer):
    """Learned per-channel scale of a residual branch: ``(..., D) -> (..., D)``, ``x * gamma``.

    CaiT / DeiT-3 / DINOv2 (timm's ``ls1`` / ``ls2``); ``gamma`` starts at
    ``init_value``.

    Args:
        init_value: float > 0. Initial value of every ``gamma``.
    """

    def __init__(self, init_value=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.init_value = number(
            init_value, "layer_scale_init", minimum=0.0, exclusive_minimum=True
        )

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma",
            shape=(input_shape[-1],),
            initializer=initializers.Constant(self.init_value),
        )

    def call(self, x):
        return x * ops.cast(self.gamma, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TransformerBlock(ResidualStreamInput, layers.Layer):
    """Pre-LayerNorm encoder block: ``(B, T, D) -> (B, T, D)``.

    ``x + ls1 * MSA(LN(x))`` then ``x + ls2 * MLP(LN(x))``, with LayerScale
    ``ls1`` / ``ls2`` only when ``layer_scale_init`` is set, each residual
    branch passed through stochastic depth (per-sample drop path) in
    training. Under mixed precision the stream ``x`` stays float32
    (``ResidualStreamInput``) and the branches, computed in the compute
    dtype, are added to it. Where a branch is added as it is (no LayerScale,
    no dropout or drop path running, stream and branch in one dtype) the
    stream goes into the branch's last GEMM as its ``residual``: one MatMul
    + bias + add kernel under oneDNN.

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
        layer_scale_init: float or None. Initial LayerScale of both branches;
            None for none.
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
        layer_scale_init=None,
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
        self.layer_scale_init = None if layer_scale_init is None else float(layer_scale_init)
        policy = self.dtype_policy
        self.layer_scales = [
            LayerScale(self.layer_scale_init, name=name, dtype=policy)
            for name in (("ls1", "ls2") if self.layer_scale_init is not None else ())
        ]
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
        for layer in (
            self.norm_attention,
            self.attention,
            self.norm_mlp,
            self.mlp,
            *self.layer_scales,
        ):
            layer.build(input_shape)

    def _scaled(self, index, y):
        return self.layer_scales[index](y) if self.layer_scales else y

    def _drop_path(self, x, training):
        if not training or self.drop_path_rate == 0.0:
            return x
        keep = 1.0 - self.drop_path_rate
        noise = keras.random.uniform(
            (ops.shape(x)[0], 1, 1), seed=self.seed_generator, dtype=x.dtype
        )
        return x / keep * ops.floor(keep + noise)

    def _branches_are_plain(self, x, training):
        """Whether each residual branch's output is added as it is (no scale, dropout or cast).

        Then the sublayers add the stream to their last GEMM themselves
        (``on_tokens``), where oneDNN fuses the add.
        """
        dropping = training and (self.dropout_rate > 0 or self.drop_path_rate > 0)
        same_dtype = keras.backend.standardize_dtype(x.dtype) == self.compute_dtype
        return not (self.layer_scales or dropping) and same_dtype

    def _add_branch(self, index, x, y, training):
        """The stream ``x`` plus branch ``index``'s output ``y`` (LayerScale, drop-path, cast)."""
        return x + ops.cast(self._drop_path(self._scaled(index, y), training), x.dtype)

    def call(self, x, training=None, return_attention_scores=False, output_tokens=None):
        """The block on the stream ``x`` ``(B, T, D)``: ``(B, T, D)``, or ``(B, k, D)``.

        Args:
            x: the residual stream ``(B, T, D)``.
            training: bool. Dropout and stochastic depth.
            return_attention_scores: bool. Also return the float32 attention
                weights ``(B, heads, T or k, T)``.
            output_tokens: optional int ``k``: compute the outputs of the
                first ``k`` tokens only, ``(B, k, D)``; their attention still
                reads the keys and values of all ``T`` tokens, so each row is
                the one the whole block gives. A model whose head reads the
                class token asks this of its last block, which then skips
                ``T - k`` rows of its MLP, output projection and queries.

        Raises:
            ValueError: for an ``output_tokens`` that is not an int in
                ``[1, T]`` (``T`` checked where the token count is static).
        """
        if output_tokens is not None:
            output_tokens = integer(output_tokens, "output_tokens", 1, x.shape[1])
        plain = self._branches_are_plain(x, training)
        # frozen inference with keras-vit's CPU kernels: the attention's
        # residual add and the LayerNorm after it as one op
        fused = not training and native_kernels(x.dtype, "add_layer_norm") is not None
        normed, context = self.norm_attention(x), None
        if output_tokens is not None:
            context, normed, x = normed, normed[:, :output_tokens], x[:, :output_tokens]
        y = self.attention(
            normed,
            training=training,
            return_attention_scores=return_attention_scores,
            context=context,
            residual=x if plain and not fused else None,
        )
        if return_attention_scores:
            y, scores = y
        if fused:
            x, normed = self.norm_mlp.added(x, self._scaled(0, y))
        else:
            if plain:
                x = y
            else:
                y = self.attention_output_dropout(y, training=training)
                x = self._add_branch(0, x, y, training)
            normed = self.norm_mlp(x)
        y = self.mlp(normed, training=training, residual=x if plain else None)
        x = y if plain else self._add_branch(1, x, y, training)
        if return_attention_scores:
            return x, scores
        return x

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
            "layer_scale_init": self.layer_scale_init,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MAPHead(layers.Layer):
    """Multihead attention pooling (big_vision ``MAPHead``): ``(B, N, D) -> (B, D)``.

    A learned probe ``(1, 1, D)`` attends over the tokens (queries from the
    probe, keys and values from the tokens), then ``x + MLP(LN(x))``; the
    probe's row is the pooled feature. SigLIP's image towers pool this way
    (timm: ``attn_pool``). The probe and the sum stay float32 under mixed
    precision, like the residual stream.

    Args:
        num_heads: int. Attention heads.
        mlp_dim: int. MLP hidden width.
        layer_norm_epsilon: float. LayerNorm epsilon.
        approximate_gelu: bool. tanh-approximate GELU (big_vision's).
    """

    def __init__(
        self, num_heads, mlp_dim, layer_norm_epsilon=1e-6, approximate_gelu=False, **kwargs
    ):
        super().__init__(**kwargs)
        self.num_heads = integer(num_heads, "num_heads", minimum=1)
        self.mlp_dim = integer(mlp_dim, "mlp_dim", minimum=1)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.approximate_gelu = bool(approximate_gelu)
        policy = self.dtype_policy
        self.attention = MultiHeadSelfAttention(
            self.num_heads, name="MultiHeadDotProductAttention_0", dtype=policy
        )
        self.norm = LayerNorm(epsilon=self.layer_norm_epsilon, name="LayerNorm_0", dtype=policy)
        self.mlp = MlpBlock(
            self.mlp_dim, approximate_gelu=self.approximate_gelu, name="MlpBlock_0", dtype=policy
        )

    @property
    def input_dtype(self):
        return self.variable_dtype

    def build(self, input_shape):
        width = input_shape[-1]
        self.probe = self.add_weight(
            name="probe",
            shape=(1, 1, width),
            initializer=_fan_initializer("glorot_uniform", (1, width)),
            autocast=False,
        )
        for layer in (self.attention, self.norm, self.mlp):
            layer.build((None, 1, width))

    def call(self, tokens, training=None, return_attention_scores=False):
        batch, width = ops.shape(tokens)[0], ops.shape(tokens)[2]
        probe = ops.broadcast_to(ops.cast(self.probe, tokens.dtype), (batch, 1, width))
        x = self.attention(
            ops.cast(probe, self.compute_dtype),
            training=training,
            return_attention_scores=return_attention_scores,
            context=ops.cast(tokens, self.compute_dtype),
        )
        if return_attention_scores:
            x, scores = x
        x = ops.cast(x, tokens.dtype)
        x = x + ops.cast(self.mlp(self.norm(x), training=training), x.dtype)
        pooled = x[:, 0]
        if return_attention_scores:
            return pooled, scores
        return pooled

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "approximate_gelu": self.approximate_gelu,
        }
