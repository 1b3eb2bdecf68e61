"""BiT ResNet v2 stem of the hybrid Vision Transformers, in ``keras.ops``.

The stem of the official ``vit_jax`` hybrids (and of timm's
``vit_*_r*`` models): a root of weight-standardised conv 7x7/2 + GroupNorm +
ReLU + max-pool 3x3/2 (all SAME padding), then stages of bottleneck units.
Layers are named like the official checkpoint, so inside a ``ViT`` named
``"vit"`` the variable paths are:

==============================================  ==========================
Keras variable path                             official ``.npz`` key
==============================================  ==========================
``vit/resnet/conv_root/kernel``                 ``conv_root/kernel``
``vit/resnet/gn_root/{gamma,beta}``             ``gn_root/{scale,bias}``
``vit/resnet/block{s}/unit{u}/conv{1,2,3}/kernel``  ``block{s}/unit{u}/conv{1,2,3}/kernel``
``vit/resnet/block{s}/unit{u}/gn{1,2,3}/gamma``     ``block{s}/unit{u}/gn{1,2,3}/scale``
``vit/resnet/block{s}/unit{u}/conv_proj/kernel``    ``block{s}/unit{u}/conv_proj/kernel``
``vit/resnet/block{s}/unit{u}/gn_proj/{gamma,beta}`` ``block{s}/unit{u}/gn_proj/{scale,bias}``
==============================================  ==========================

Kernels are stored HWIO (``(kh, kw, in, out)``) as in the official files.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.model.variants import resnet_output_channels, resnet_stride

_PACKAGE = "keras_vit"

GROUP_NORM_GROUPS = 32

# The two numerics of the checkpoint families (``ViT(semantics=...)``).
# official (vit_jax): w' = (w - mean) / (std + 1e-5), GroupNorm eps 1e-6.
# timm (StdConv2dSame): w' = (w - mean) / sqrt(var + 1e-8), GroupNorm eps 1e-5.
STEM_NUMERICS = {
    "official": dict(standardize_epsilon=1e-5, epsilon_inside_sqrt=False, group_norm_epsilon=1e-6),
    "timm": dict(standardize_epsilon=1e-8, epsilon_inside_sqrt=True, group_norm_epsilon=1e-5),
}


def _check_semantics(semantics):
    if semantics not in STEM_NUMERICS:
        raise ValueError(f"semantics must be one of {tuple(STEM_NUMERICS)}, got {semantics!r}.")


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return value


def _group_norm(name, semantics, policy, gamma_initializer="ones"):
    """GroupNorm with 32 groups; statistics in float32 under mixed precision."""
    return keras.layers.GroupNormalization(
        groups=GROUP_NORM_GROUPS,
        epsilon=STEM_NUMERICS[semantics]["group_norm_epsilon"],
        gamma_initializer=gamma_initializer,
        name=name,
        dtype=policy,
    )


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StdConv2D(keras.layers.Layer):
    """Weight-standardised 2D convolution, SAME padding, no bias.

    ``(batch, height, width, in) -> (batch, ceil(height / s), ceil(width / s),
    filters)``. Before every call the kernel ``(kh, kw, in, filters)`` is
    standardised per output channel over ``(kh, kw, in)``: official
    ``(w - mean) / (std + 1e-5)`` or timm ``(w - mean) / sqrt(var + 1e-8)``.
    The standardisation runs in float32; the convolution in the compute dtype.

    Args:
        filters: int. Output channels.
        kernel_size: int. Square kernel size.
        strides: int. Square stride.
        semantics: str. ``"official"`` or ``"timm"`` standardisation.
    """

    def __init__(self, filters, kernel_size, strides=1, semantics="timm", **kwargs):
        super().__init__(**kwargs)
        self.filters = _positive_int(filters, "filters")
        self.kernel_size = _positive_int(kernel_size, "kernel_size")
        self.strides = _positive_int(strides, "strides")
        _check_semantics(semantics)
        self.semantics = semantics

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.kernel_size, self.kernel_size, input_shape[-1], self.filters),
            initializer="lecun_normal",
            autocast=False,
        )

    def standardized_kernel(self):
        """The standardised kernel ``(kh, kw, in, filters)`` in float32."""
        numerics = STEM_NUMERICS[self.semantics]
        kernel = ops.cast(self.kernel, "float32")
        kernel = kernel - ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
        variance = ops.mean(ops.square(kernel), axis=(0, 1, 2), keepdims=True)
        epsilon = numerics["standardize_epsilon"]
        if numerics["epsilon_inside_sqrt"]:
            return kernel * ops.rsqrt(variance + epsilon)
        return kernel / (ops.sqrt(variance) + epsilon)

    def call(self, inputs):
        kernel = ops.cast(self.standardized_kernel(), self.compute_dtype)
        return ops.conv(inputs, kernel, strides=self.strides, padding="same")

    def compute_output_shape(self, input_shape):
        return (
            input_shape[0],
            *(_same_size(size, self.strides) for size in input_shape[1:3]),
            self.filters,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "semantics": self.semantics,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResidualUnit(keras.layers.Layer):
    """Bottleneck unit of BiT ResNet v2 (post-activation, as in vit_jax).

    ``(batch, height, width, in) -> (batch, height / s, width / s, 4 * width)``:
    ``y = gn3(conv3(relu(gn2(conv2(relu(gn1(conv1(x))))))))``, with the
    3x3 ``conv2`` strided; ``out = relu(shortcut + y)`` where the shortcut is
    ``gn_proj(conv_proj(x))`` when the channels change or the unit is
    strided, else ``x``. ``gn3`` starts with a zero scale.

    Args:
        width: int. Bottleneck width; the unit outputs ``4 * width`` channels.
        strides: int. Stride of ``conv2`` and of the projection.
        semantics: str. ``"official"`` or ``"timm"`` numerics.
    """

    def __init__(self, width, strides=1, semantics="timm", **kwargs):
        super().__init__(**kwargs)
        self.width = _positive_int(width, "width")
        self.strides = _positive_int(strides, "strides")
        _check_semantics(semantics)
        self.semantics = semantics
        policy = self.dtype_policy
        out = 4 * self.width
        self.convs = [
            StdConv2D(self.width, 1, semantics=semantics, name="conv1", dtype=policy),
            StdConv2D(self.width, 3, self.strides, semantics=semantics, name="conv2", dtype=policy),
            StdConv2D(out, 1, semantics=semantics, name="conv3", dtype=policy),
        ]
        self.norms = [
            _group_norm("gn1", semantics, policy),
            _group_norm("gn2", semantics, policy),
            _group_norm("gn3", semantics, policy, gamma_initializer="zeros"),
        ]
        self.conv_proj = None
        self.gn_proj = None

    def build(self, input_shape):
        if input_shape[-1] != 4 * self.width or self.strides != 1:
            policy = self.dtype_policy
            self.conv_proj = StdConv2D(
                4 * self.width,
                1,
                self.strides,
                semantics=self.semantics,
                name="conv_proj",
                dtype=policy,
            )
            self.gn_proj = _group_norm("gn_proj", self.semantics, policy)
            self.conv_proj.build(input_shape)
            self.gn_proj.build(self.conv_proj.compute_output_shape(input_shape))
        shape = input_shape
        for conv, norm in zip(self.convs, self.norms):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            norm.build(shape)

    def call(self, inputs):
        shortcut = inputs
        if self.conv_proj is not None:
            shortcut = self.gn_proj(self.conv_proj(inputs))
        y = inputs
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            y = norm(conv(y))
            if i < 2:
                y = ops.relu(y)
        return ops.relu(shortcut + y)

    def compute_output_shape(self, input_shape):
        return self.convs[2].compute_output_shape(self.convs[1].compute_output_shape(input_shape))

    def get_config(self):
        return {
            **super().get_config(),
            "width": self.width,
            "strides": self.strides,
            "semantics": self.semantics,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResNetStage(keras.layers.Layer):
    """A stage ``block{s}``: ``depth`` residual units ``unit1 .. unit{depth}``.

    ``(batch, height, width, in) -> (batch, height / s, width / s,
    4 * width)``; only the first unit is strided.

    Args:
        depth: int. Number of units.
        width: int. Bottleneck width of every unit.
        strides: int. Stride of the first unit.
        semantics: str. ``"official"`` or ``"timm"`` numerics.
    """

    def __init__(self, depth, width, strides=1, semantics="timm", **kwargs):
        super().__init__(**kwargs)
        self.depth = _positive_int(depth, "depth")
        self.width = _positive_int(width, "width")
        self.strides = _positive_int(strides, "strides")
        _check_semantics(semantics)
        self.semantics = semantics
        self.units = [
            ResidualUnit(
                self.width,
                self.strides if u == 1 else 1,
                semantics=semantics,
                name=f"unit{u}",
                dtype=self.dtype_policy,
            )
            for u in range(1, self.depth + 1)
        ]

    def build(self, input_shape):
        for unit in self.units:
            unit.build(input_shape)
            input_shape = unit.compute_output_shape(input_shape)

    def call(self, inputs):
        for unit in self.units:
            inputs = unit(inputs)
        return inputs

    def compute_output_shape(self, input_shape):
        for unit in self.units:
            input_shape = unit.compute_output_shape(input_shape)
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "depth": self.depth,
            "width": self.width,
            "strides": self.strides,
            "semantics": self.semantics,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResNetStem(keras.layers.Layer):
    """BiT ResNet v2 feature extractor of the hybrid ViTs.

    ``(batch, height, width, channels) -> (batch, height / stride,
    width / stride, features)``: root conv 7x7/2 (``conv_root``) +
    GroupNorm (``gn_root``) + ReLU + max-pool 3x3/2 (SAME padding, as
    TensorFlow pads), then stages ``block1 .. block{n}`` of widths
    ``width * 2 ** (s - 1)``, the first with stride 1 and the others with
    stride 2. ``stride`` is 4 for the root alone (``layers=()``), else
    ``4 * 2 ** (len(layers) - 1)``; ``features`` is ``width`` for the root
    alone, else ``4 * width * 2 ** (len(layers) - 1)``.

    Args:
        layers: tuple of int. Units per stage, e.g. ``(3, 4, 9)`` (R50
            hybrid); ``()`` for the root only.
        width: int. Root width (64 in the paper), a multiple of 32 (the
            GroupNorm groups).
        semantics: str. ``"official"`` (vit_jax) or ``"timm"`` numerics of
            weight standardisation and GroupNorm.
    """

    def __init__(self, layers=(3, 4, 9), width=64, semantics="timm", **kwargs):
        super().__init__(**kwargs)
        try:
            self.layers = tuple(_positive_int(depth, "layers[i]") for depth in layers)
        except (TypeError, ValueError):
            raise ValueError(
                f"layers must be a tuple of positive ints (units per stage), got {layers!r}."
            ) from None
        self.width = _positive_int(width, "width")
        if self.width % GROUP_NORM_GROUPS:
            raise ValueError(
                f"width must be a multiple of {GROUP_NORM_GROUPS} (GroupNorm "
                f"groups), got {width!r}."
            )
        _check_semantics(semantics)
        self.semantics = semantics
        self.stride = resnet_stride(self.layers)
        self.features = resnet_output_channels(self.layers, self.width)
        policy = self.dtype_policy
        self.conv_root = StdConv2D(
            self.width, 7, 2, semantics=semantics, name="conv_root", dtype=policy
        )
        self.gn_root = _group_norm("gn_root", semantics, policy)
        self.stages = [
            ResNetStage(
                depth,
                self.width * 2 ** (s - 1),
                strides=1 if s == 1 else 2,
                semantics=semantics,
                name=f"block{s}",
                dtype=policy,
            )
            for s, depth in enumerate(self.layers, start=1)
        ]

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "ResNetStem expects images of rank 4 (batch, height, width, "
                f"channels); got shape {tuple(input_shape)}."
            )
        self.conv_root.build(input_shape)
        shape = self.conv_root.compute_output_shape(input_shape)
        self.gn_root.build(shape)
        shape = _pooled_shape(shape)
        for stage in self.stages:
            stage.build(shape)
            shape = stage.compute_output_shape(shape)

    def call(self, images):
        x = ops.relu(self.gn_root(self.conv_root(images)))
        x = ops.max_pool(x, pool_size=3, strides=2, padding="same")
        for stage in self.stages:
            x = stage(x)
        return x

    def compute_output_shape(self, input_shape):
        shape = _pooled_shape(self.conv_root.compute_output_shape(input_shape))
        for stage in self.stages:
            shape = stage.compute_output_shape(shape)
        return shape

    def get_config(self):
        return {
            **super().get_config(),
            "layers": self.layers,
            "width": self.width,
            "semantics": self.semantics,
        }


def _same_size(size, stride):
    """Output size of a SAME-padded op: ``ceil(size / stride)``."""
    return None if size is None else -(-size // stride)


def _pooled_shape(shape):
    """Shape after the root's max-pool 3x3/2 SAME."""
    return (shape[0], *(_same_size(size, 2) for size in shape[1:3]), shape[3])
