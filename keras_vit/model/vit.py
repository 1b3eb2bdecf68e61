"""The Vision Transformer model.

Data flow (``ViT.forward_intermediates`` names each stage)::

    images (B, H, W, C) in [-1, 1]
      -> [ResNet stem (hybrids)]                      "stem"
      -> PatchEncoder                (B, N, D)        "patches"        (embed_patches)
      -> [posemb "learn_grid" | "sincos2d": added to the patch tokens]
      -> prefix tokens: [class] [distillation] [registers]   (B, P + N, D)
      -> [posemb "learn": added with entries for the prefix]  "with_posemb"
      -> dropout -> TransformerBlock x L              "block_{i}"      (encode)
      -> LayerNorm (float32; none with fc_norm)       "encoded"
      -> pool: class token | mean of the patch tokens [+ fc_norm] | MAP head   "pooled"
      -> [Dense + tanh]              (B, R)           "pre_logits"
      -> head Dense (float32) [+ head_dist: mean]     "logits"

``model(images)`` and ``ViT.head_outputs`` run the same stages but, where the
head reads the class (and distillation) token, the last block computes those
rows only (their attention reads every token): the same numbers, nearly 1/L of the
blocks' dense work less.

The options of the ViT family (each documented with the checkpoints it serves
in the class docstring) are arguments of one class: the original ViT and
AugReg, DeiT (distillation token), DeiT-3 and DINOv2 (LayerScale, registers,
grid-only position embeddings), SigLIP image towers (MAP head, no class
token), big_vision's plain ViT (sin-cos position embeddings, gap) and timm's
MAE-style fine-tuning (mean pooling + ``fc_norm``).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from keras_vit.model import loading, variants
from keras_vit.model.blocks import MAPHead, TransformerBlock
from keras_vit.model.layers import (
    AddPositionEmbs,
    AddSinCosPositionEmbs,
    ClassToken,
    LayerNorm,
    PatchEncoder,
    PrefixTokens,
)
from keras_vit.model.posemb import POSEMB_INTERPOLATIONS
from keras_vit.model.resnet import ResNetStem
from keras_vit.validation import choice, integer, number, pair
from keras_vit.weights import KerasFile, model_variables, open_weights

CLASSIFIERS = ("token", "gap", "map", "unpooled")
SEMANTICS = ("timm", "official")
POSEMBS = ("learn", "learn_grid", "sincos2d", "none")
OUTPUT_FORMATS = ("NLC", "NHWC")


@keras.saving.register_keras_serializable(package="keras_vit")
class ViT(keras.Model):
    """Vision Transformer (Dosovitskiy et al., 2021) and its family, optionally hybrid.

    Takes images ``(batch, height, width, channels)`` scaled to [-1, 1]
    (see ``keras_vit.preprocess_input``) and returns, with ``include_top``,
    logits (or activations) ``(batch, num_classes)``; without it, pooled
    features ``(batch, hidden)`` (or ``(batch, representation_size)``); with
    ``classifier="unpooled"``, the encoded tokens ``(batch, tokens, hidden)``.

    Args:
        image_size: int or (int, int). Input height and width. Must be
            divisible by the total stride (patch size, times the stem stride
            for hybrids).
        patch_size: int or (int, int). Patch size on the pixels (or on the
            ResNet feature map for hybrids).
        hidden_size: int. Token width ``D``.
        num_layers: int. Number of encoder blocks.
        num_heads: int. Attention heads per block.
        mlp_dim: int. MLP hidden width.
        num_classes: int. Classes of the head (ignored without a top).
        include_top: bool. Add the classification head.
        classifier: str. How the encoded tokens are pooled: ``"token"`` (the
            class token: ViT, DeiT, DINOv2), ``"gap"`` (mean of the patch
            tokens after the final LayerNorm: official gap, big_vision;
            with ``fc_norm``, timm's avg pooling), ``"map"`` (a learned probe
            attends over the patch tokens, big_vision ``MAPHead``: SigLIP) or
            ``"unpooled"`` (return the token sequence; no head).
        class_token: bool or None. Prepend a learned class token; None:
            yes for ``"token"`` and ``"unpooled"``, no for ``"gap"`` and
            ``"map"``.
        distillation_token: bool. DeiT's distillation token after the class
            token, with a second head ``head_dist``; the logits are the mean
            of both heads (``forward_intermediates`` also returns
            ``logits_cls`` and ``logits_dist``).
        num_register_tokens: int. Register tokens ("Vision Transformers need
            registers", DINOv2-reg) after the class and distillation tokens;
            never pooled.
        posemb: str. ``"learn"`` (learned, with entries for the prefix
            tokens: original ViT, AugReg, DeiT, DINOv2), ``"learn_grid"``
            (learned for the patch grid only, added before the prefix
            tokens are prepended: big_vision, DeiT-3 and DINOv2 with
            registers, timm ``no_embed_class``), ``"sincos2d"`` (fixed 2-D
            sin-cos, recomputed for any grid: big_vision's plain ViT) or
            ``"none"``.
        layer_scale_init: float or None. LayerScale on both residual
            branches of every block, starting at this value (DeiT-3,
            DINOv2); None for none.
        fc_norm: bool. timm's mean pooling with ``fc_norm`` (MAE / BEiT
            fine-tuning): no final LayerNorm on the tokens; LayerNorm of the
            pooled mean instead. Needs ``classifier="gap"``.
        representation_size: int or None. Width of the pre-logits Dense +
            tanh layer used in pre-training; None for none.
        dropout_rate: float. Dropout after the position embeddings and
            inside the blocks.
        attention_dropout_rate: float. Dropout on attention weights.
        drop_path_rate: float. Stochastic depth, rising linearly from 0 in
            the first block to this value in the last.
        classifier_activation: str, callable or None. Activation of the head
            (None or "linear" returns logits).
        channels: int. Input channels (1 for grayscale).
        layer_norm_epsilon: float. LayerNorm epsilon.
        semantics: str. ``"timm"`` (exact GELU; timm's hybrid numerics) or
            ``"official"`` (tanh-approximate GELU as the JAX / big_vision
            checkpoints were trained; official weight standardisation and
            GroupNorm epsilon).
        resnet_layers: tuple of int or None. Stage depths of a BiT ResNet
            stem (``()`` for the root only); None for a plain ViT.
        resnet_width: int. Width of the ResNet root (64 in the paper).
        posemb_interpolation: str. How learned position embeddings are
            resized when called on another grid (``dynamic_resolution``).
        dynamic_resolution: bool. Accept any input size divisible by the
            total stride; the position embeddings are resized (or, for
            sin-cos, recomputed) in the graph.
        input_mean, input_std: sequences of ``channels`` floats, or None.
            The input normalisation the weights were trained with, on
            [0, 1] pixels (ImageNet's for DeiT and DINOv2). The model still
            takes [-1, 1] images like every keras-vit model, and applies
            ``((x + 1) / 2 - mean) / std`` first; None (the Google and
            big_vision checkpoints) leaves them as they are.
    """

    def __init__(
        self,
        image_size=224,
        patch_size=16,
        hidden_size=768,
        num_layers=12,
        num_heads=12,
        mlp_dim=3072,
        num_classes=1000,
        include_top=True,
        classifier="token",
        representation_size=None,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.0,
        classifier_activation=None,
        channels=3,
        layer_norm_epsilon=1e-6,
        semantics="timm",
        resnet_layers=None,
        resnet_width=64,
        posemb_interpolation="official",
        dynamic_resolution=False,
        class_token=None,
        distillation_token=False,
        num_register_tokens=0,
        posemb="learn",
        layer_scale_init=None,
        fc_norm=False,
        input_mean=None,
        input_std=None,
        name="vit",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.image_size = pair(image_size, "image_size")
        self.patch_size = pair(patch_size, "patch_size")
        self.hidden_size = integer(hidden_size, "hidden_size", minimum=1)
        self.num_layers = integer(num_layers, "num_layers", minimum=0)
        self.num_heads = integer(num_heads, "num_heads", minimum=1)
        self.mlp_dim = integer(mlp_dim, "mlp_dim", minimum=1)
        self.num_classes = None if num_classes is None else integer(num_classes, "num_classes", 1)
        self.include_top = _flag(include_top, "include_top")
        self.classifier = choice(classifier, "classifier", CLASSIFIERS)
        self.representation_size = (
            None
            if representation_size is None
            else integer(representation_size, "representation_size", minimum=1)
        )
        self.dropout_rate = number(dropout_rate, "dropout_rate", 0.0, 1.0)
        self.attention_dropout_rate = number(
            attention_dropout_rate, "attention_dropout_rate", 0.0, 1.0
        )
        self.drop_path_rate = number(drop_path_rate, "drop_path_rate", 0.0, 1.0)
        self.classifier_activation = classifier_activation
        self.channels = integer(channels, "channels", minimum=1)
        self.layer_norm_epsilon = number(
            layer_norm_epsilon, "layer_norm_epsilon", 0.0, exclusive_minimum=True
        )
        self.semantics = choice(semantics, "semantics", SEMANTICS)
        self.resnet_layers = None
        if resnet_layers is not None:
            if isinstance(resnet_layers, (str, bytes)) or not hasattr(resnet_layers, "__iter__"):
                raise ValueError(
                    f"resnet_layers must be a sequence of stage depths, got {resnet_layers!r}."
                )
            self.resnet_layers = tuple(
                integer(depth, "resnet_layers entry", minimum=1) for depth in resnet_layers
            )
        self.resnet_width = integer(resnet_width, "resnet_width", minimum=1)
        self.posemb_interpolation = choice(
            posemb_interpolation, "posemb_interpolation", POSEMB_INTERPOLATIONS
        )
        self.dynamic_resolution = _flag(dynamic_resolution, "dynamic_resolution")
        if class_token is None:
            class_token = self.classifier in ("token", "unpooled")
        self.class_token_enabled = _flag(class_token, "class_token")
        self.distillation_token = _flag(distillation_token, "distillation_token")
        self.num_register_tokens = integer(num_register_tokens, "num_register_tokens", minimum=0)
        self.posemb = choice(posemb, "posemb", POSEMBS)
        self.layer_scale_init = (
            None
            if layer_scale_init is None
            else number(layer_scale_init, "layer_scale_init", 0.0, exclusive_minimum=True)
        )
        self.fc_norm = _flag(fc_norm, "fc_norm")
        self.input_mean, self.input_std = _normalisation(input_mean, input_std, self.channels)
        self._validate_options()

        policy = self.dtype_policy
        self.stem = None
        stem_stride = 1
        if self.resnet_layers is not None:
            self.stem = ResNetStem(
                layers=self.resnet_layers,
                width=self.resnet_width,
                semantics=self.semantics,
                name="resnet",
                dtype=policy,
            )
            stem_stride = self.stem.stride
        self.stride = (stem_stride * self.patch_size[0], stem_stride * self.patch_size[1])
        for size, stride, axis in zip(self.image_size, self.stride, ("height", "width")):
            if size % stride:
                raise ValueError(
                    f"Image {axis} {size} is not divisible by the patch size "
                    f"{stride} (image_size={self.image_size}, total stride "
                    f"{self.stride}); use a multiple of {stride}."
                )
        self.grid_size = (
            self.image_size[0] // self.stride[0],
            self.image_size[1] // self.stride[1],
        )
        self.num_prefix_tokens = (
            int(self.class_token_enabled) + int(self.distillation_token) + self.num_register_tokens
        )

        self.embedding = PatchEncoder(
            self.hidden_size, self.patch_size, name="embedding", dtype=policy
        )
        # Prefix layers in the order they are applied: each prepends its
        # tokens, so the sequence reads [class, distillation, registers, patches].
        self.prefix_layers = []
        if self.num_register_tokens:
            self.prefix_layers.append(
                PrefixTokens(
                    self.num_register_tokens,
                    keras.initializers.RandomNormal(stddev=1e-6),
                    name="reg_token",
                    dtype=policy,
                )
            )
        if self.distillation_token:
            self.prefix_layers.append(
                PrefixTokens(
                    1, keras.initializers.RandomNormal(stddev=0.02), name="dist_token", dtype=policy
                )
            )
        self.class_token = (
            ClassToken(name="cls", dtype=policy) if self.class_token_enabled else None
        )
        if self.class_token is not None:
            self.prefix_layers.append(self.class_token)
        self.position_embedding = None
        if self.posemb in ("learn", "learn_grid"):
            self.position_embedding = AddPositionEmbs(
                self.grid_size,
                self.num_prefix_tokens if self.posemb == "learn" else 0,
                self.posemb_interpolation,
                name="posembed_input",
                dtype=policy,
            )
        elif self.posemb == "sincos2d":
            self.position_embedding = AddSinCosPositionEmbs(name="posembed_sincos", dtype=policy)
        # The residual stream stays in the variable dtype (float32 under
        # mixed precision); see layers.ResidualStreamInput.
        self.embedding_dropout = layers.Dropout(self.dropout_rate, dtype=policy.variable_dtype)
        self.blocks = [
            TransformerBlock(
                self.num_heads,
                self.mlp_dim,
                dropout_rate=self.dropout_rate,
                attention_dropout_rate=self.attention_dropout_rate,
                drop_path_rate=self.drop_path_rate * i / max(self.num_layers - 1, 1),
                layer_norm_epsilon=self.layer_norm_epsilon,
                approximate_gelu=self.semantics == "official",
                layer_scale_init=self.layer_scale_init,
                name=f"encoderblock_{i}",
                dtype=policy,
            )
            for i in range(self.num_layers)
        ]
        # float32 like the head it feeds (one LayerNorm, no GEMM to speed up).
        self.encoder_norm = None
        if not self.fc_norm:
            self.encoder_norm = LayerNorm(
                epsilon=self.layer_norm_epsilon, name="encoder_norm", dtype=policy.variable_dtype
            )
        self.map_head = None
        if self.classifier == "map":
            self.map_head = MAPHead(
                self.num_heads,
                self.mlp_dim,
                self.layer_norm_epsilon,
                approximate_gelu=self.semantics == "official",
                name="MAPHead_0",
                dtype=policy,
            )
        self.pooled_norm = None
        if self.fc_norm:
            self.pooled_norm = LayerNorm(
                epsilon=self.layer_norm_epsilon, name="fc_norm", dtype=policy.variable_dtype
            )
        self.pre_logits = None
        if self.representation_size and self.classifier != "unpooled":
            self.pre_logits = layers.Dense(
                self.representation_size,
                activation="tanh",
                name="pre_logits",
                dtype=policy,
            )
        self.head = self.head_dist = None
        if self.include_top:
            head_args = dict(
                kernel_initializer="zeros",
                bias_initializer="zeros",
                activation=None if self.distillation_token else classifier_activation,
                dtype="float32",
            )
            self.head = layers.Dense(self.num_classes, name="head", **head_args)
            if self.distillation_token:
                self.head_dist = layers.Dense(self.num_classes, name="head_dist", **head_args)
        spatial = (None, None) if self.dynamic_resolution else self.image_size
        self.build((None, *spatial, self.channels))

    def _validate_options(self):
        if self.classifier == "unpooled" and (self.include_top or self.representation_size):
            raise ValueError(
                "classifier='unpooled' returns the token sequence and has no "
                "head or pre-logits layer: pass include_top=False and "
                f"representation_size=None (got include_top={self.include_top}, "
                f"representation_size={self.representation_size})."
            )
        if self.include_top and not self.num_classes:
            raise ValueError(f"include_top=True needs num_classes >= 1, got {self.num_classes!r}.")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}."
            )
        if self.classifier == "token" and not self.class_token_enabled:
            raise ValueError("classifier='token' pools the class token: class_token must be True.")
        if self.distillation_token and (self.classifier != "token" or self.representation_size):
            raise ValueError(
                "distillation_token (DeiT) needs classifier='token' and no representation "
                f"layer; got classifier={self.classifier!r}, "
                f"representation_size={self.representation_size}."
            )
        if self.fc_norm and self.classifier != "gap":
            raise ValueError(
                f"fc_norm normalises the mean of the patch tokens: it needs classifier='gap', "
                f"got {self.classifier!r}."
            )
        if self.posemb == "sincos2d" and self.hidden_size % 4:
            raise ValueError(
                f"posemb='sincos2d' needs hidden_size divisible by 4, got {self.hidden_size}."
            )

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        x_shape = input_shape
        if self.stem is not None:
            self.stem.build(x_shape)
            x_shape = self.stem.compute_output_shape(x_shape)
        self.embedding.build(x_shape)
        patches = None
        if not self.dynamic_resolution:
            patches = self.grid_size[0] * self.grid_size[1]
        patch_shape = (None, patches, self.hidden_size)
        token_shape = (
            None,
            None if patches is None else patches + self.num_prefix_tokens,
            self.hidden_size,
        )
        for layer in self.prefix_layers:
            layer.build(patch_shape)
        if self.position_embedding is not None:
            self.position_embedding.build(token_shape if self.posemb == "learn" else patch_shape)
        for block in self.blocks:
            block.build(token_shape)
        for norm in (self.encoder_norm, self.pooled_norm):
            if norm is not None:
                norm.build(token_shape)
        if self.map_head is not None:
            self.map_head.build(patch_shape)
        feature_width = self.hidden_size
        if self.pre_logits is not None:
            self.pre_logits.build((None, self.hidden_size))
            feature_width = self.representation_size
        for head in (self.head, self.head_dist):
            if head is not None:
                head.build((None, feature_width))
        self.built = True

    def _check_input_shape(self, shape):
        if len(shape) != 4:
            raise ValueError(
                "ViT expects images of rank 4 (batch, height, width, channels); "
                f"got shape {tuple(shape)}."
            )
        if shape[-1] is not None and shape[-1] != self.channels:
            raise ValueError(
                f"ViT expects {self.channels} input channel(s); got {shape[-1]} "
                f"(input shape {tuple(shape)})."
            )
        height, width = shape[1], shape[2]
        if self.dynamic_resolution:
            for size, stride, axis in zip((height, width), self.stride, ("height", "width")):
                if size is not None and size % stride:
                    raise ValueError(
                        f"Input {axis} {size} is not divisible by the patch "
                        f"size {stride} (total stride: patch size x stem stride)."
                    )
        elif None not in (height, width) and (height, width) != self.image_size:
            raise ValueError(
                f"ViT was built for {self.image_size[0]}x{self.image_size[1]} "
                f"images; got {height}x{width}. Build the model with "
                "image_size=... for this size (position embeddings are "
                "resized on load) or with dynamic_resolution=True."
            )

    def images_spec(self):
        """``tf.TensorSpec`` float32 ``(batch, height, width, channels)`` of the model's images.

        Batch is None; height and width are None for a ``dynamic_resolution``
        model. The input signature of every exported and frozen graph.
        """
        import tensorflow as tf

        spatial = (None, None) if self.dynamic_resolution else self.image_size
        return tf.TensorSpec((None, *spatial, self.channels), tf.float32, name="images")

    def _checked_spatial(self, images):
        """``images``, with the fixed size checked at run time where the traced shape is unknown.

        A model without ``dynamic_resolution`` traced with unknown height or
        width (a ``tf.function`` with ``(None, None, None, C)``) would
        otherwise crop or resize its way through another size.
        """
        if self.dynamic_resolution or None not in tuple(images.shape[1:3]):
            return images
        if keras.backend.backend() != "tensorflow":
            return images
        import tensorflow as tf

        check = tf.debugging.assert_equal(
            tf.shape(images)[1:3],
            tf.constant(self.image_size, tf.int32),
            message=(
                f"ViT was built for {self.image_size[0]}x{self.image_size[1]} images "
                "(dynamic_resolution=False); got another size"
            ),
        )
        with tf.control_dependencies([check]):
            return tf.identity(images)

    @property
    def head_token_indices(self):
        """Rows of the encoded sequence the head reads: class (and distillation) token, or None.

        None means the head reads a pooling of the patch tokens (gap, MAP,
        fc_norm). Attention rollout follows these rows.
        """
        if self.classifier != "token":
            return None
        return (0, 1) if self.distillation_token else (0,)

    def embed_patches(self, images, training=False):
        """Pixels to patch embeddings: the stem (hybrids) and ``PatchEncoder``.

        Args:
            images: tensor ``(batch, height, width, channels)`` in [-1, 1].
            training: bool. Training mode (the stem's GroupNorm has none).

        Returns:
            ``(out, grid_shape)``: dict with ``patches`` ``(B, N, D)`` (and
            ``stem`` ``(B, h, w, C')`` for hybrids), and the patch grid
            ``(rows, cols)`` (symbolic under ``dynamic_resolution``).
        """
        self._check_input_shape(images.shape)
        out = {}
        x = self._checked_spatial(ops.cast(images, self.compute_dtype))
        if self.input_mean is not None:  # [-1, 1] -> the weights' own normalisation
            mean = ops.cast(np.asarray(self.input_mean, "float32"), x.dtype)
            std = ops.cast(np.asarray(self.input_std, "float32"), x.dtype)
            x = ((x + 1.0) * 0.5 - mean) / std
        if self.stem is not None:
            x = out["stem"] = self.stem(x, training=training)
        grid_shape = (ops.shape(x)[1] // self.patch_size[0], ops.shape(x)[2] // self.patch_size[1])
        out["patches"] = self.embedding(x)
        return out, grid_shape

    def encode(
        self,
        patches,
        grid_shape,
        training=False,
        return_attention=False,
        block_indices=None,
        stop_early=False,
        head_tokens_only=False,
    ):
        """Patch embeddings to the encoded sequence: prefix tokens, posemb, blocks, final norm.

        Masked patch prediction corrupts ``patches`` between ``embed_patches``
        and this stage, so the position embeddings are added to the corrupted
        tokens (as BERT adds them to a replaced token).

        Args:
            patches: tensor ``(B, N, D)`` from ``embed_patches``.
            grid_shape: ``(rows, cols)`` of the patches.
            training: bool. Training mode (dropout, stochastic depth).
            return_attention: bool or sequence of block indices. Also return
                the attention weights ``(batch, heads, tokens, tokens)`` of
                the chosen blocks (all blocks for True) as ``attention_{i}``
                (explicit, float32 softmax path).
            block_indices: None or sequence of block indices (0-based): the
                blocks whose outputs are returned as ``block_{i}`` (all for
                None).
            stop_early: bool. Stop after the last block of ``block_indices``
                (no ``encoded``).
            head_tokens_only: bool. Where the head reads the class (and
                distillation) token (``head_token_indices``), the last block
                computes those rows only (``TransformerBlock``'s
                ``output_tokens``) and ``encoded`` is ``(B, k, D)``, ``k`` =
                ``len(head_token_indices)`` (so is ``block_{L-1}`` when asked):
                the same rows, without the other ``T - k`` rows of the last
                MLP and output projection. Ignored for the other classifiers.

        Returns:
            dict with ``with_posemb`` ``(B, T, D)``, ``block_{i}``
            ``(B, T, D)``, ``encoded`` ``(B, T, D)`` (``T = P + N``, P =
            ``num_prefix_tokens``) and ``attention_{i}`` when asked.
        """
        chosen = range(self.num_layers) if block_indices is None else block_indices
        chosen = set(self._block_indices(chosen))
        attention = set(
            self._block_indices(
                range(self.num_layers) if return_attention is True else return_attention or ()
            )
        )
        last = (
            max(chosen | attention) if stop_early and (chosen | attention) else self.num_layers - 1
        )
        out = {}
        x = patches
        if self.posemb in ("learn_grid", "sincos2d"):
            x = self.position_embedding(x, grid_shape=grid_shape)
        for layer in self.prefix_layers:
            x = layer(x)
        if self.posemb == "learn":
            x = self.position_embedding(x, grid_shape=grid_shape)
        x = out["with_posemb"] = ops.cast(x, self.variable_dtype)
        x = self.embedding_dropout(x, training=training)
        head_rows = self.head_token_indices if head_tokens_only else None
        for i, block in enumerate(self.blocks[: last + 1]):
            rows = len(head_rows) if head_rows and i == self.num_layers - 1 else None
            if i in attention:
                x, out[f"attention_{i}"] = block(
                    x, training=training, return_attention_scores=True, output_tokens=rows
                )
            else:
                x = block(x, training=training, output_tokens=rows)
            if i in chosen:
                out[f"block_{i}"] = x
        if stop_early and last < self.num_layers - 1:
            return out
        out["encoded"] = x if self.encoder_norm is None else self.encoder_norm(x)
        return out

    def _block_indices(self, indices):
        """Block indices as non-negative ints (negative ones count from the end), checked."""
        result = []
        for index in indices:
            index = integer(index, "block index", -self.num_layers, self.num_layers - 1)
            result.append(index % self.num_layers if self.num_layers else index)
        return result

    def pool(self, encoded, training=False, return_attention=False):
        """The pooled features ``(B, D)`` of the encoded sequence ``(B, P + N, D)``.

        ``token``: the class token (with a distillation token, the pair
        ``(class, distillation)`` is returned as a tuple of two ``(B, D)``);
        ``gap``: the mean of the patch tokens (then ``fc_norm``); ``map``: the
        MAP head over the patch tokens (with ``return_attention``, also its
        weights ``(B, heads, 1, N)``).
        """
        if self.classifier == "token":
            if self.distillation_token:
                return encoded[:, 0], encoded[:, 1]
            return encoded[:, 0]
        patch_tokens = encoded[:, self.num_prefix_tokens :]
        if self.classifier == "map":
            return self.map_head(
                patch_tokens, training=training, return_attention_scores=return_attention
            )
        pooled = ops.mean(patch_tokens, axis=1)
        return pooled if self.pooled_norm is None else self.pooled_norm(pooled)

    def forward_intermediates(
        self,
        images,
        training=False,
        return_attention=False,
        indices=None,
        output_format="NLC",
        stop_early=False,
    ):
        """Runs the model and returns every named stage.

        Args:
            images: tensor ``(batch, height, width, channels)`` in [-1, 1].
            training: bool. Training mode (dropout, stochastic depth).
            return_attention: bool or sequence of block indices. Attention
                weights ``(batch, heads, tokens, tokens)`` of the chosen blocks
                as ``attention_{i}`` (True: the blocks of ``indices``); at high
                resolution ask for a few blocks only, every layer's weights
                do not fit in memory. MAP models add ``attention_map``
                ``(batch, heads, 1, N)``.
            indices: None (every block), an int ``n`` (the last ``n`` blocks)
                or a sequence of block indices (negative from the end): the
                blocks returned as ``block_{i}``.
            output_format: ``"NLC"`` (``block_{i}`` the whole sequence
                ``(B, T, D)``) or ``"NHWC"`` (``block_{i}`` the patch tokens as
                a feature map ``(B, rows, cols, D)`` and ``prefix_{i}`` the
                prefix tokens ``(B, P, D)``), as dense-prediction heads want.
            stop_early: bool. Stop after the last chosen block: no
                ``encoded``, ``pooled`` or ``logits``.

        Returns:
            dict of tensors: ``stem`` (hybrids), ``patches`` ``(B, N, D)``,
            ``with_posemb`` ``(B, T, D)``, ``block_{i}``, ``attention_{i}``,
            ``encoded`` ``(B, T, D)``, ``prefix_tokens`` ``(B, P, D)`` and
            ``patch_tokens`` (``(B, N, D)``, or ``(B, rows, cols, D)`` for
            NHWC) of the encoded sequence, and unless unpooled ``pooled``
            ``(B, D)``, ``pre_logits`` ``(B, R or D)``, ``logits`` (with a
            top; DeiT adds ``logits_cls`` and ``logits_dist``).
        """
        output_format = choice(output_format, "output_format", OUTPUT_FORMATS)
        block_indices = self._chosen_blocks(indices)
        if return_attention is True:
            return_attention = block_indices
        out, grid_shape = self.embed_patches(images, training=training)
        out.update(
            self.encode(
                out["patches"], grid_shape, training, return_attention, block_indices, stop_early
            )
        )
        if output_format == "NHWC":
            for i in block_indices:
                if f"block_{i}" in out:
                    out[f"prefix_{i}"], out[f"block_{i}"] = self._split_tokens(
                        out[f"block_{i}"], grid_shape
                    )
        if "encoded" not in out:
            return out
        encoded = out["encoded"]
        out["prefix_tokens"] = encoded[:, : self.num_prefix_tokens]
        out["patch_tokens"] = encoded[:, self.num_prefix_tokens :]
        if output_format == "NHWC":
            out["patch_tokens"] = self._split_tokens(encoded, grid_shape)[1]
        if self.classifier != "unpooled":
            out.update(self._pool_and_head(encoded, training, return_attention))
        return out

    def _pool_and_head(self, encoded, training=False, return_attention=False):
        """Pooling and head of the encoded sequence ``(B, T, D)`` or its head's rows ``(B, k, D)``.

        The head's rows are the first ``k`` (``head_token_indices``), as
        ``encode(..., head_tokens_only=True)`` returns them; ``pool`` reads
        the class (and distillation) token at the same indices in both.

        Returns:
            dict: ``pooled`` ``(B, D)``, ``pre_logits`` ``(B, R or D)``, and
            with a top ``logits`` (DeiT adds ``logits_cls``, ``logits_dist``
            and ``pooled_dist``); MAP models with ``return_attention`` add
            ``attention_map`` ``(B, heads, 1, N)``.
        """
        out = {}
        pooled = self.pool(
            encoded, training, return_attention=bool(return_attention) and self.map_head is not None
        )
        if self.map_head is not None and return_attention:
            pooled, out["attention_map"] = pooled
        if self.distillation_token:
            pooled, pooled_dist = pooled
        x = out["pooled"] = pooled
        if self.pre_logits is not None:
            x = self.pre_logits(x)
        out["pre_logits"] = x
        if self.head is None:
            return out
        out["logits"] = self.head(x)
        if self.distillation_token:
            out["logits_cls"], out["logits_dist"] = out["logits"], self.head_dist(pooled_dist)
            out["pooled_dist"] = pooled_dist
            logits = (out["logits_cls"] + out["logits_dist"]) / 2.0
            activation = keras.activations.get(self.classifier_activation)
            out["logits"] = activation(logits)
        return out

    def _chosen_blocks(self, indices):
        if indices is None:
            return list(range(self.num_layers))
        if isinstance(indices, (int, np.integer)) and not isinstance(indices, bool):
            count = integer(indices, "indices", 1, self.num_layers)
            return list(range(self.num_layers - count, self.num_layers))
        return self._block_indices(indices)

    def _split_tokens(self, sequence, grid_shape):
        """``(B, P + N, D)`` -> prefix ``(B, P, D)`` and feature map ``(B, rows, cols, D)``."""
        prefix = sequence[:, : self.num_prefix_tokens]
        patches = sequence[:, self.num_prefix_tokens :]
        rows, cols = grid_shape
        return prefix, ops.reshape(patches, (ops.shape(patches)[0], rows, cols, self.hidden_size))

    def head_outputs(self, images, training=False):
        """The head's outputs, computing only the rows they need.

        ``forward_intermediates``' ``pooled``, ``pre_logits`` and ``logits``
        (and DeiT's ``logits_cls``, ``logits_dist``, ``pooled_dist``), with
        the same numbers. Where the head reads the class (and distillation)
        token, the last block computes those rows only (``encode``'s
        ``head_tokens_only``): for ViT-B/16 at 224, 197 -> 1 rows of the last
        MLP and output projection, about 1/12 of the network's GEMM work.

        Args:
            images: tensor ``(batch, height, width, channels)`` in [-1, 1].
            training: bool. Training mode (dropout, stochastic depth).

        Returns:
            dict of tensors, ``(batch, ...)`` each.

        Raises:
            ValueError: for ``classifier="unpooled"`` (no head).
        """
        if self.classifier == "unpooled":
            raise ValueError("classifier='unpooled' has no head; call the model for its tokens.")
        out, grid_shape = self.embed_patches(images, training=training)
        encoded = self.encode(
            out["patches"], grid_shape, training, block_indices=(), head_tokens_only=True
        )["encoded"]
        return self._pool_and_head(encoded, training)

    def call(self, images, training=False):
        if self.classifier == "unpooled":
            return self.forward_intermediates(images, training=training)["encoded"]
        out = self.head_outputs(images, training=training)
        return out["logits"] if self.head is not None else out["pre_logits"]

    def predict(self, x, *args, **kwargs):
        """``keras.Model.predict``; an empty batch gives an empty result instead of Keras' error."""
        if hasattr(x, "shape") and len(x.shape) == 4 and x.shape[0] == 0:
            shape = self.compute_output_shape(tuple(x.shape))
            return np.zeros((0, *shape[1:]), dtype="float32")
        return super().predict(x, *args, **kwargs)

    def compute_output_shape(self, input_shape):
        if self.classifier == "unpooled":
            tokens = None
            if not self.dynamic_resolution:
                tokens = self.grid_size[0] * self.grid_size[1] + self.num_prefix_tokens
            return (input_shape[0], tokens, self.hidden_size)
        if self.head is not None:
            return (input_shape[0], self.num_classes)
        return (input_shape[0], self.representation_size or self.hidden_size)

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
        }
        for key in _CONFIG_KEYS:
            config[key] = getattr(self, key)
        config["class_token"] = self.class_token_enabled
        config["classifier_activation"] = (
            keras.activations.serialize(keras.activations.get(self.classifier_activation))
            if callable(self.classifier_activation)
            else self.classifier_activation
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("classifier_activation"), dict):
            config["classifier_activation"] = keras.activations.deserialize(
                config["classifier_activation"]
            )
        return cls(**config)

    @classmethod
    def from_variant(
        cls,
        variant,
        weights=None,
        include_top=None,
        input_shape=None,
        image_size=None,
        num_classes=None,
        classes=None,
        classifier_activation=None,
        semantics="auto",
        posemb_interpolation="auto",
        **overrides,
    ):
        """Builds a variant of the table with ``keras.applications`` arguments.

        ``ViT.from_variant("B/16", num_classes=10)`` is ``keras_vit.ViT_B16(num_classes=10)``.
        With ``weights``, the checkpoint supplies the defaults of every argument
        not given: ``image_size`` (its training resolution), ``num_classes``,
        ``representation_size``, ``classifier``, ``layer_norm_epsilon`` (1e-12
        for Hugging Face), ``semantics`` and ``posemb_interpolation``. Explicit
        arguments win: another ``image_size`` resizes the position embeddings,
        another ``num_classes`` leaves a new head initialised (with a warning),
        ``representation_size=None`` drops a checkpoint's ``pre_logits``.

        Args:
            variant: str. A key of ``keras_vit.model.variants.VARIANTS``.
            weights: None; a ``.weights.h5`` / ``.keras`` file; an official
                ``.npz``, timm or Hugging Face ``.safetensors`` file or folder;
                a name of ``keras_vit.weights.REGISTRY`` (downloaded once); or
                a URL.
            include_top: bool or None. Keep the classification head; None:
                yes, unless ``weights`` has none (DINOv2, SigLIP towers) and
                no ``num_classes`` is given.
            input_shape: optional ``(height, width, channels)``.
            image_size: optional int or (int, int); default 224 (or the
                checkpoint's resolution).
            num_classes: int. Number of classes (alias ``classes``); 1000 by
                default (or the checkpoint's).
            classes: int. ``keras.applications`` spelling of ``num_classes``.
            classifier_activation: activation of the head; None gives logits.
            semantics: str. ``"official"`` (tanh GELU; official hybrid
                numerics), ``"timm"`` (exact GELU; timm's hybrid numerics) or
                ``"auto"``: ``"official"`` for ``.npz`` checkpoints, ``"timm"``
                for timm / Hugging Face checkpoints and without weights.
            posemb_interpolation: str. ``"official"``, ``"bilinear"``,
                ``"bicubic"``, ``"bicubic_hf"`` or ``"auto"``: ``"official"``
                for ``.npz`` and without weights, ``"bicubic"`` for timm,
                ``"bicubic_hf"`` for Hugging Face. Used to resize the position
                embeddings on load and, with ``dynamic_resolution``, in the graph.
            **overrides: any other ``ViT`` argument (``classifier``,
                ``representation_size``, ``dropout_rate``, ...), overriding the
                variant table.

        Returns:
            A built ``ViT``.
        """
        config = variants.variant_config(variant)
        if classes is not None and num_classes is not None and classes != num_classes:
            raise ValueError(f"classes={classes} and num_classes={num_classes} disagree; pass one.")
        num_classes = num_classes if num_classes is not None else classes
        if input_shape is not None:
            if len(input_shape) != 3:
                raise ValueError(
                    f"input_shape must be (height, width, channels); got {input_shape!r}."
                )
            if image_size is not None and pair(image_size, "image_size") != tuple(input_shape[:2]):
                raise ValueError(f"image_size={image_size} and input_shape={input_shape} disagree.")
            image_size = tuple(input_shape[:2])
            overrides.setdefault("channels", input_shape[2])
        source, defaults = None, {}
        if weights is not None:
            source, defaults = loading.variant_defaults(weights, variant, config["num_heads"])
        if overrides.get("classifier") == "unpooled":
            defaults.pop("representation_size", None)
        for key in loading.ARCHITECTURE_DEFAULT_KEYS:
            if key in defaults:
                overrides.setdefault(key, defaults[key])
        config.update(overrides)
        if include_top is None:  # asking for classes asks for a head
            include_top = num_classes is not None or defaults.get("include_top", True)
        if image_size is None:
            image_size = defaults.get("image_size") or 224
        if num_classes is None:
            num_classes = defaults.get("num_classes") or 1000
        model = cls(
            image_size=image_size,
            num_classes=num_classes,
            include_top=include_top,
            classifier_activation=classifier_activation,
            semantics=defaults.get("semantics", "timm") if semantics == "auto" else semantics,
            posemb_interpolation=(
                defaults.get("posemb_interpolation", "official")
                if posemb_interpolation == "auto"
                else posemb_interpolation
            ),
            name=variants.factory_name(variant).lower(),
            **config,
        )
        if source is not None:
            loading.load_weights(model, source)
        return model

    @classmethod
    def from_checkpoint(cls, weights, num_heads=None, **overrides):
        """Builds the ``ViT`` a checkpoint describes and loads it.

        Hugging Face folders are read with their ``config.json`` (LayerNorm eps
        1e-12, ``hidden_act``), timm folders with theirs; ``.npz`` files and bare
        ``.safetensors`` from their tensor shapes. A ``.keras`` file is loaded
        as it is (safe mode).

        Args:
            weights: path, folder, registry name, URL or ``Checkpoint``.
            num_heads: int or None. Heads, when neither the tensors nor a config
                tell (non-standard widths in timm / HF files without config).
            **overrides: ``ViT`` arguments replacing the checkpoint's (e.g.
                ``image_size=384``, ``num_classes=10``, ``semantics="timm"``).

        Returns:
            A built, loaded ``keras_vit.ViT``.
        """
        source, entry = open_weights(weights)
        if isinstance(source, KerasFile):
            if not source.has_architecture:
                raise ValueError(
                    f"{source.path} holds weights without an architecture; build the "
                    "model with its factory, e.g. keras_vit.ViT_B16(weights=path, ...) "
                    "(keras-vit convert --variant B/16)."
                )
            return keras.saving.load_model(source.path, safe_mode=True)
        config = loading.checkpoint_architecture(source, num_heads, entry)
        config.update(overrides)
        if config["image_size"] is None:
            raise ValueError(
                f"The position embedding of {source.path} is not a square grid; "
                "pass image_size=(height, width) of the model it was trained with."
            )
        if config.get("num_classes") is None:
            config["num_classes"] = 1000 if config.get("include_top") else None
        model = cls(**config)
        loading.load_checkpoint(model, source)
        return model

    def inference_copy(self, image_size=None, posemb_interpolation=None, dynamic_resolution=False):
        """A float32 copy with a linear head, for export and inference.

        Args:
            image_size: optional int or (int, int). Input size of the copy; the
                position embeddings are resized once to the new patch grid.
                Ignored with ``dynamic_resolution`` (the embeddings keep the
                trained grid and are resized in the graph).
            posemb_interpolation: optional str. Resize method (``"official"``,
                ``"bilinear"``, ``"bicubic"``, ``"bicubic_hf"``); the model's
                own by default.
            dynamic_resolution: bool. Build the copy for any input size that
                the patch size divides.

        Returns:
            A built float32 ``ViT`` whose ``call`` gives logits ``(batch,
            classes)`` (pooled features without a head).
        """
        config = self.get_config()
        config.update(dtype="float32", classifier_activation=None)
        config["dynamic_resolution"] = bool(dynamic_resolution)
        if posemb_interpolation is not None:
            config["posemb_interpolation"] = posemb_interpolation
        if image_size is not None and not dynamic_resolution:
            config["image_size"] = pair(image_size, "image_size")
        copy = self.__class__.from_config(config)
        source = model_variables(self)
        for path, variable in model_variables(copy).items():
            value = np.asarray(source[path].numpy(), dtype="float32")
            if value.shape != tuple(variable.shape):
                value = loading.fit_position_embedding(
                    value,
                    copy,
                    copy.posemb_interpolation,
                    checkpoint_prefix=self.position_embedding.num_prefix_tokens,
                    source_grid_shape=self.grid_size,
                )
            variable.assign(value)
        return copy


_CONFIG_KEYS = (
    "image_size",
    "patch_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "mlp_dim",
    "num_classes",
    "include_top",
    "classifier",
    "representation_size",
    "dropout_rate",
    "attention_dropout_rate",
    "drop_path_rate",
    "channels",
    "layer_norm_epsilon",
    "semantics",
    "resnet_layers",
    "resnet_width",
    "posemb_interpolation",
    "dynamic_resolution",
    "distillation_token",
    "num_register_tokens",
    "posemb",
    "layer_scale_init",
    "fc_norm",
    "input_mean",
    "input_std",
)


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def _normalisation(mean, std, channels):
    """``(mean, std)`` as tuples of ``channels`` floats (std > 0), or ``(None, None)``."""
    if mean is None and std is None:
        return None, None
    if mean is None or std is None:
        raise ValueError("input_mean and input_std go together: pass both or neither.")
    values = []
    for name, given in (("input_mean", mean), ("input_std", std)):
        if (
            isinstance(given, (str, bytes))
            or not hasattr(given, "__len__")
            or len(given) != channels
        ):
            raise ValueError(f"{name} must be a sequence of {channels} numbers, got {given!r}.")
        minimum = 0.0 if name == "input_std" else None
        values.append(
            tuple(number(v, name, minimum, exclusive_minimum=name == "input_std") for v in given)
        )
    return values[0], values[1]
