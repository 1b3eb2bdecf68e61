"""The Vision Transformer model and its variant factories.

Data flow (``ViT.forward_intermediates`` names each stage)::

    images (B, H, W, C) in [-1, 1]
      -> [ResNet stem (hybrids)]                    "stem"
      -> PatchEncoder              (B, N, D)        "patches"
      -> ClassToken                (B, 1 + N, D)    (classifier="token")
      -> AddPositionEmbs           (B, T, D)        "with_posemb"
      -> dropout -> TransformerBlock x L            "block_{i}"
      -> LayerNorm (float32)       (B, T, D)        "encoded"
      -> pool: class token | mean of tokens (B, D)  "pooled"
      -> [Dense + tanh]            (B, R)           "pre_logits"
      -> head Dense (float32)      (B, classes)     "logits"
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from keras_vit.model import loading, variants
from keras_vit.model.layers import (
    AddPositionEmbs,
    ClassToken,
    LayerNorm,
    PatchEncoder,
    TransformerBlock,
)
from keras_vit.model.resnet import ResNetStem
from keras_vit.validation import pair
from keras_vit.weights import Checkpoint, KerasFile, model_variables, open_weights, registry_entry

CLASSIFIERS = ("token", "gap", "unpooled")
SEMANTICS = ("timm", "official")


@keras.saving.register_keras_serializable(package="keras_vit")
class ViT(keras.Model):
    """Vision Transformer (Dosovitskiy et al., 2021), optionally hybrid.

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
        classifier: str. ``"token"`` (class token), ``"gap"`` (no class
            token; mean of all tokens after the final LayerNorm) or
            ``"unpooled"`` (return the token sequence; no head).
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
            ``"official"`` (tanh-approximate GELU as the JAX checkpoints were
            trained; official weight standardisation and GroupNorm epsilon).
        resnet_layers: tuple of int or None. Stage depths of a BiT ResNet
            stem (``()`` for the root only); None for a plain ViT.
        resnet_width: int. Width of the ResNet root (64 in the paper).
        posemb_interpolation: str. How the position embeddings are resized
            when called on another grid (``dynamic_resolution``).
        dynamic_resolution: bool. Accept any input size divisible by the
            total stride; the position embeddings are resized in the graph.
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
        name="vit",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.image_size = pair(image_size, "image_size")
        self.patch_size = pair(patch_size, "patch_size")
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.mlp_dim = int(mlp_dim)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.include_top = bool(include_top)
        self.classifier = classifier
        self.representation_size = representation_size
        self.dropout_rate = float(dropout_rate)
        self.attention_dropout_rate = float(attention_dropout_rate)
        self.drop_path_rate = float(drop_path_rate)
        self.classifier_activation = classifier_activation
        self.channels = int(channels)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.semantics = semantics
        self.resnet_layers = None if resnet_layers is None else tuple(resnet_layers)
        self.resnet_width = int(resnet_width)
        self.posemb_interpolation = posemb_interpolation
        self.dynamic_resolution = bool(dynamic_resolution)
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
        self.num_prefix_tokens = 1 if classifier in ("token", "unpooled") else 0

        self.embedding = PatchEncoder(
            self.hidden_size, self.patch_size, name="embedding", dtype=policy
        )
        self.class_token = ClassToken(name="cls", dtype=policy) if self.num_prefix_tokens else None
        self.position_embedding = AddPositionEmbs(
            self.grid_size,
            self.num_prefix_tokens,
            self.posemb_interpolation,
            name="posembed_input",
            dtype=policy,
        )
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
                name=f"encoderblock_{i}",
                dtype=policy,
            )
            for i in range(self.num_layers)
        ]
        # float32 like the head it feeds (one LayerNorm, no GEMM to speed up).
        self.encoder_norm = LayerNorm(
            epsilon=self.layer_norm_epsilon,
            name="encoder_norm",
            dtype=policy.variable_dtype,
        )
        self.pre_logits = None
        if self.representation_size and self.classifier != "unpooled":
            self.pre_logits = layers.Dense(
                self.representation_size,
                activation="tanh",
                name="pre_logits",
                dtype=policy,
            )
        self.head = None
        if self.include_top:
            self.head = layers.Dense(
                self.num_classes,
                kernel_initializer="zeros",
                bias_initializer="zeros",
                activation=classifier_activation,
                name="head",
                dtype="float32",
            )
        spatial = (None, None) if self.dynamic_resolution else self.image_size
        self.build((None, *spatial, self.channels))

    def _validate_options(self):
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {self.classifier!r}.")
        if self.semantics not in SEMANTICS:
            raise ValueError(f"semantics must be one of {SEMANTICS}, got {self.semantics!r}.")
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
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}.")

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        x_shape = input_shape
        if self.stem is not None:
            self.stem.build(x_shape)
            x_shape = self.stem.compute_output_shape(x_shape)
        self.embedding.build(x_shape)
        tokens = None
        if not self.dynamic_resolution:
            tokens = self.grid_size[0] * self.grid_size[1] + self.num_prefix_tokens
        token_shape = (None, tokens, self.hidden_size)
        if self.class_token is not None:
            self.class_token.build(token_shape)
        self.position_embedding.build(token_shape)
        for block in self.blocks:
            block.build(token_shape)
        self.encoder_norm.build(token_shape)
        feature_width = self.hidden_size
        if self.pre_logits is not None:
            self.pre_logits.build((None, self.hidden_size))
            feature_width = self.representation_size
        if self.head is not None:
            self.head.build((None, feature_width))
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
        x = ops.cast(images, self.compute_dtype)
        if self.stem is not None:
            x = out["stem"] = self.stem(x, training=training)
        grid_shape = (ops.shape(x)[1] // self.patch_size[0], ops.shape(x)[2] // self.patch_size[1])
        out["patches"] = self.embedding(x)
        return out, grid_shape

    def encode(self, patches, grid_shape, training=False, return_attention=False):
        """Patch embeddings to the encoded sequence: prefix tokens, posemb, blocks, final norm.

        Masked patch prediction corrupts ``patches`` between ``embed_patches``
        and this stage, so the position embeddings are added to the corrupted
        tokens (as BERT adds them to a replaced token).

        Args:
            patches: tensor ``(B, N, D)`` from ``embed_patches``.
            grid_shape: ``(rows, cols)`` of the patches.
            training: bool. Training mode (dropout, stochastic depth).
            return_attention: bool. Also return each block's attention
                weights ``(batch, heads, tokens, tokens)`` as
                ``attention_{i}`` (explicit, float32 softmax path).

        Returns:
            dict with ``with_posemb`` ``(B, T, D)``, ``block_{i}``
            ``(B, T, D)``, ``encoded`` ``(B, T, D)`` (``T = prefix + N``)
            and ``attention_{i}`` when asked.
        """
        out = {}
        x = patches
        if self.class_token is not None:
            x = self.class_token(x)
        x = out["with_posemb"] = self.position_embedding(x, grid_shape=grid_shape)
        x = self.embedding_dropout(x, training=training)
        for i, block in enumerate(self.blocks):
            if return_attention:
                x, out[f"attention_{i}"] = block(x, training=training, return_attention_scores=True)
            else:
                x = block(x, training=training)
            out[f"block_{i}"] = x
        out["encoded"] = self.encoder_norm(x)
        return out

    def forward_intermediates(self, images, training=False, return_attention=False):
        """Runs the model and returns every named stage.

        Args:
            images: tensor ``(batch, height, width, channels)`` in [-1, 1].
            training: bool. Training mode (dropout, stochastic depth).
            return_attention: bool. Also return each block's attention
                weights ``(batch, heads, tokens, tokens)`` as
                ``attention_{i}`` (explicit, float32 softmax path).

        Returns:
            dict of tensors: ``stem`` (hybrids), ``patches`` ``(B, N, D)``,
            ``with_posemb`` ``(B, T, D)``, ``block_{i}`` ``(B, T, D)``,
            ``encoded`` ``(B, T, D)``, and unless unpooled ``pooled``
            ``(B, D)``, ``pre_logits`` ``(B, R or D)``, ``logits`` (with a
            top).
        """
        out, grid_shape = self.embed_patches(images, training=training)
        out.update(self.encode(out["patches"], grid_shape, training, return_attention))
        if self.classifier == "unpooled":
            return out
        x = out["encoded"]
        x = out["pooled"] = x[:, 0] if self.classifier == "token" else ops.mean(x, axis=1)
        if self.pre_logits is not None:
            x = self.pre_logits(x)
        out["pre_logits"] = x
        if self.head is not None:
            out["logits"] = self.head(x)
        return out

    def call(self, images, training=False):
        out = self.forward_intermediates(images, training=training)
        if self.classifier == "unpooled":
            return out["encoded"]
        return out["logits"] if self.head is not None else out["pre_logits"]

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
        include_top=True,
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
            include_top: bool. Keep the classification head.
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
            entry = registry_entry(weights)
            if entry is not None and entry.variant != variant:  # before any download
                raise ValueError(
                    f"Weights {weights!r} are for ViT-{entry.variant}, not ViT-{variant}; "
                    f"use keras_vit.{variants.factory_name(entry.variant)}(weights={weights!r})."
                )
            source, entry = open_weights(weights)
            if isinstance(source, Checkpoint):
                architecture = loading.checkpoint_architecture(source, config["num_heads"], entry)
                defaults = {key: architecture[key] for key in loading.CHECKPOINT_DEFAULT_KEYS}
        if overrides.get("classifier") == "unpooled":
            defaults.pop("representation_size", None)
        for key in ("representation_size", "classifier", "layer_norm_epsilon"):
            if key in defaults:
                overrides.setdefault(key, defaults[key])
        config.update(overrides)
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
                    checkpoint_prefix=self.num_prefix_tokens,
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
)
