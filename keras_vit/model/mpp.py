"""Masked patch prediction: the ViT paper's self-supervised pre-training (Section 4.6, B.1.2).

BERT's masked language modelling carried over to patches. For each image,
``corruption_rate * N`` (rounded half up) of its ``N`` patch embeddings are corrupted:
of those, ``mask_rate`` (80 %) are replaced by a learnable ``[mask]``
embedding, ``random_rate`` (10 %) by the embedding of another patch of the
same image (never the patch itself), and the rest (10 %) are left as they
are. The position embeddings are added afterwards (``ViT.encode``), as BERT
adds them to a replaced token. From each corrupted patch's encoded token the
model predicts the patch's **3-bit mean colour** (512 classes for RGB, 8 for
grayscale) with a softmax cross-entropy over the corrupted patches only.

Targets (``target``):

==========================  ================================================
``"mean_color"``            the patch's mean colour, ``bits`` per channel:
                            one of ``2 ** (bits * channels)`` classes
``"downsampled_color"``     the patch downsampled to ``downsample`` x
                            ``downsample`` (4 x 4 in the paper), each cell in
                            ``bits``-bit colour: 16 predictions per patch
``"pixels"``                L2 regression of the full patch (its pixels in
                            [-1, 1])
==========================  ================================================

``MaskedPatchPrediction`` wraps any keras-vit backbone (plain or hybrid) and
uses only its stage API: ``embed_patches``, ``encode``,
``num_prefix_tokens``, ``hidden_size``, ``stride``, ``grid_size``,
``channels``. A token of a hybrid covers ``stride`` x ``stride`` pixels
(patch size x stem stride), and that region is its target.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.validation import choice, integer, number, pair

TARGETS = ("mean_color", "downsampled_color", "pixels")
#: What the task uses of a backbone (``keras_vit.ViT``'s stage API).
_BACKBONE_API = (
    "embed_patches",
    "encode",
    "num_prefix_tokens",
    "hidden_size",
    "stride",
    "grid_size",
    "channels",
)

#: Settings of the pre-training task and their defaults (the paper's).
MPP_DEFAULTS = {
    "target": "mean_color",
    "bits": 3,
    "corruption_rate": 0.5,
    "mask_rate": 0.8,
    "random_rate": 0.1,
    "downsample": 4,
}


def check_mpp_settings(settings, prefix=""):
    """The task settings, defaults filled in and every value checked.

    Args:
        settings: dict with some of ``MPP_DEFAULTS``' keys.
        prefix: str. Put before each key in the messages (``"mpp."`` for a
            recipe).

    Returns:
        dict with every key of ``MPP_DEFAULTS``.

    Raises:
        ValueError: for an unknown key or a value of the wrong type or
            range (``mask_rate + random_rate`` must not exceed 1).
    """
    unknown = sorted(set(settings) - set(MPP_DEFAULTS))
    if unknown:
        raise ValueError(
            f"Unknown masked patch prediction setting(s) {[prefix + k for k in unknown]}; "
            f"expected some of {sorted(prefix + k for k in MPP_DEFAULTS)}."
        )
    checked = {**MPP_DEFAULTS, **settings}
    checked["target"] = choice(checked["target"], prefix + "target", TARGETS)
    checked["bits"] = integer(checked["bits"], prefix + "bits", 1, 8)
    for key in ("corruption_rate", "mask_rate", "random_rate"):
        checked[key] = number(checked[key], prefix + key, 0.0, 1.0)
    if checked["corruption_rate"] == 0.0:
        raise ValueError(f"{prefix}corruption_rate must be > 0 (nothing to predict), got 0.0.")
    if checked["mask_rate"] + checked["random_rate"] > 1.0:
        raise ValueError(
            f"{prefix}mask_rate + {prefix}random_rate must be <= 1 (the rest of the corrupted "
            f"patches stay unchanged); got {checked['mask_rate']} + {checked['random_rate']}."
        )
    checked["downsample"] = integer(checked["downsample"], prefix + "downsample", 1)
    return checked


def patch_color_targets(images, patch_size, bits=3, downsample=None):
    """The colour targets of masked patch prediction, per patch.

    Patches are cut as ``PatchEncoder`` cuts them (row-major, ``N = (H / p)
    (W / q)``). Each patch (or, with ``downsample``, each of its ``d`` x
    ``d`` cells, row-major) is averaged per channel, then quantised:

    - a value ``v`` in [-1, 1] maps to ``u = (v + 1) / 2`` in [0, 1];
    - its level is ``min(floor(u * 2 ** bits), 2 ** bits - 1)``, so with 3
      bits ``u`` in [k / 8, (k + 1) / 8) is level k and ``u = 1`` level 7
      (values outside [-1, 1] are clipped to the first or last level);
    - the class is the levels as digits of base ``L = 2 ** bits``, the first
      channel most significant: ``level_R * 64 + level_G * 8 + level_B`` for
      3-bit RGB, the level itself for grayscale.

    Args:
        images: tensor ``(B, H, W, C)`` in [-1, 1]; ``C`` known, ``H`` and
            ``W`` multiples of the patch size.
        patch_size: int or (int, int). Pixels per patch (the backbone's
            ``stride`` for a hybrid).
        bits: int in [1, 8], or None for the unquantised means.
        downsample: None (the mean of the whole patch), or int or (int, int)
            ``d``: the patch averaged down to ``d`` x ``d`` cells
            (4 in the paper; the patch size itself for every pixel). Must
            divide the patch size.

    Returns:
        With ``bits``: int32 classes in ``[0, 2 ** (bits * C))``, ``(B, N)``
        (or ``(B, N, d * d)`` with ``downsample``). With ``bits=None``:
        float32 means ``(B, N, C)`` (or ``(B, N, d * d, C)``).

    Raises:
        ValueError: for a patch size that does not divide the image, a
            ``downsample`` that does not divide the patch, or bad ``bits``.
    """
    p, q = pair(patch_size, "patch_size")
    d, e = (1, 1) if downsample is None else pair(downsample, "downsample")
    if bits is not None:
        bits = integer(bits, "bits", 1, 8)
    if p % d or q % e:
        raise ValueError(
            f"downsample {(d, e)} must divide the patch size {(p, q)} (cells of whole pixels)."
        )
    if len(images.shape) != 4 or images.shape[-1] is None:
        raise ValueError(
            f"images must be (batch, height, width, channels) with known channels; "
            f"got shape {tuple(images.shape)}."
        )
    channels = images.shape[-1]
    height, width = images.shape[1], images.shape[2]
    for size, patch, axis in ((height, p, "height"), (width, q, "width")):
        if size is not None and size % patch:
            raise ValueError(f"Image {axis} {size} is not a multiple of the patch size {patch}.")
    height, width = ops.shape(images)[1], ops.shape(images)[2]
    rows, cols = height // p, width // q
    x = ops.cast(images, "float32")
    # (B, rows, d, p / d, cols, e, q / e, C): cell (i, j) of patch (r, c).
    x = ops.reshape(x, (-1, rows, d, p // d, cols, e, q // e, channels))
    x = ops.mean(x, axis=(3, 6))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # (B, rows, cols, d, e, C)
    if downsample is None:
        x = ops.reshape(x, (-1, rows * cols, channels))
    else:
        x = ops.reshape(x, (-1, rows * cols, d * e, channels))
    if bits is None:
        return x
    levels = 2**bits
    level = ops.clip(ops.floor((x + 1.0) / 2.0 * levels), 0, levels - 1)
    weights = ops.convert_to_tensor(
        [float(levels ** (channels - 1 - c)) for c in range(channels)], "float32"
    )
    return ops.cast(ops.sum(level * weights, axis=-1), "int32")


def _replica_share(loss):
    """``loss`` divided by the replicas in sync (the strategy sums their gradients)."""
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss


@keras.saving.register_keras_serializable(package="keras_vit")
class MaskedPatchPrediction(keras.Model):
    """A backbone with the paper's masked patch prediction task, trained with ``fit``.

    ``model.fit(images)`` (a NumPy array or a ``tf.data.Dataset`` of images,
    or of ``(images, labels)`` whose labels are ignored) pre-trains the
    backbone; ``model.backbone`` is the pre-trained ViT. Metrics: ``loss``
    (cross-entropy, or mean squared error for ``"pixels"``, over the
    corrupted patches) and ``accuracy`` (of the colour classes of the
    corrupted patches).

    Args:
        backbone: a built ``keras_vit.ViT`` (plain or hybrid, any prefix
            tokens). Its head and pre-logits layer, if any, are not used:
            build it with ``include_top=False``.
        target: str. ``"mean_color"``, ``"downsampled_color"`` or
            ``"pixels"`` (module docstring).
        bits: int. Bits per channel of the colour targets.
        corruption_rate: float in (0, 1]. Share of each image's ``N``
            patches that is corrupted: ``floor(rate * N + 0.5)`` of them (at
            least one), chosen uniformly.
        mask_rate: float. Share of the corrupted patches replaced by the
            ``[mask]`` embedding.
        random_rate: float. Share replaced by another patch of the image.
        downsample: int. Cells per side for ``"downsampled_color"``.
        seed: int or None. Seed of the corruption draws.

    Call: ``model(images (B, H, W, C) in [-1, 1], training)`` corrupts and
    returns a dict: ``predictions`` (float32 ``(B, N, classes)``,
    ``(B, N, d * d, classes)`` or ``(B, N, p * q * C)``) and ``corrupted``
    (float32 ``(B, N)``, 1 for the corrupted patches).
    """

    def __init__(
        self,
        backbone,
        target=MPP_DEFAULTS["target"],
        bits=MPP_DEFAULTS["bits"],
        corruption_rate=MPP_DEFAULTS["corruption_rate"],
        mask_rate=MPP_DEFAULTS["mask_rate"],
        random_rate=MPP_DEFAULTS["random_rate"],
        downsample=MPP_DEFAULTS["downsample"],
        seed=None,
        name="masked_patch_prediction",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        settings = check_mpp_settings(
            {
                "target": target,
                "bits": bits,
                "corruption_rate": corruption_rate,
                "mask_rate": mask_rate,
                "random_rate": random_rate,
                "downsample": downsample,
            }
        )
        for key, value in settings.items():
            setattr(self, key, value)
        missing = [attribute for attribute in _BACKBONE_API if not hasattr(backbone, attribute)]
        if missing:
            raise ValueError(
                "backbone must be a keras_vit.ViT (with the embed_patches / encode stages); "
                f"{type(backbone).__name__} has no {missing}."
            )
        self.backbone = backbone
        self.seed = seed
        self.patch_pixels = tuple(backbone.stride)  # pixels per token (x stem stride)
        if self.target == "downsampled_color" and any(
            size % self.downsample for size in self.patch_pixels
        ):
            raise ValueError(
                f"downsample {self.downsample} must divide the pixels per token "
                f"{self.patch_pixels} (patch size x stem stride)."
            )
        if self.random_rate > 0:
            rows, cols = backbone.grid_size
            if rows * cols < 2:
                raise ValueError(
                    "random_rate > 0 replaces a patch by another patch of the image; "
                    f"the backbone's grid {backbone.grid_size} has a single patch."
                )
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Tracked as a (non-trainable) weight, so that saving and resuming keep
        # the sequence of corruption draws.
        self.seed_state = self.seed_generator.state
        self.head = keras.layers.Dense(self._output_units(), name="mpp_head", dtype="float32")
        self.accuracy_tracker = (
            None if self.target == "pixels" else keras.metrics.Mean(name="accuracy")
        )
        self.build()

    @property
    def num_classes(self):
        """Colour classes per prediction (None for the ``"pixels"`` regression)."""
        if self.target == "pixels":
            return None
        return 2 ** (self.bits * self.backbone.channels)

    def _output_units(self):
        if self.target == "mean_color":
            return self.num_classes
        if self.target == "downsampled_color":
            return self.downsample**2 * self.num_classes
        return self.patch_pixels[0] * self.patch_pixels[1] * self.backbone.channels

    def build(self, input_shape=None):
        if self.built:
            return
        self.mask_token = self.add_weight(
            name="mask_token",
            shape=(self.backbone.hidden_size,),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            autocast=False,
        )
        self.head.build((None, None, self.backbone.hidden_size))
        self.built = True

    def corrupt(self, patches):
        """BERT's corruption of patch embeddings, drawn anew on every call.

        Args:
            patches: tensor ``(B, N, D)`` (``embed_patches``' ``patches``).

        Returns:
            ``(corrupted_patches (B, N, D), draws)`` with ``draws`` a dict of
            bool ``(B, N)`` tensors ``corrupted``, ``masked`` (replaced by the
            ``[mask]`` embedding) and ``randomised`` (replaced by another
            patch), and int32 ``source`` ``(B, N)``: the patch whose
            embedding a randomised patch received.
        """
        batch, num_patches = ops.shape(patches)[0], ops.shape(patches)[1]
        shape = (batch, num_patches)
        patches_f = ops.cast(num_patches, "float32")
        # floor(rate * N + 0.5) patches (at least one) with the smallest scores.
        count = ops.maximum(ops.cast(ops.floor(self.corruption_rate * patches_f + 0.5), "int32"), 1)
        scores = keras.random.uniform(shape, seed=self.seed_generator)
        corrupted = ops.argsort(ops.argsort(scores, axis=1), axis=1) < count
        kind = keras.random.uniform(shape, seed=self.seed_generator)
        masked = corrupted & (kind < self.mask_rate)
        randomised = corrupted & ~masked & (kind < self.mask_rate + self.random_rate)
        # Another patch: an offset in [1, N - 1] from this one, cyclically.
        draw = keras.random.uniform(shape, seed=self.seed_generator)
        offset = 1 + ops.minimum(
            ops.cast(ops.floor(draw * (patches_f - 1.0)), "int32"), ops.maximum(num_patches - 2, 0)
        )
        positions = ops.expand_dims(ops.arange(num_patches, dtype="int32"), 0)
        source = (positions + offset) % num_patches
        replacement = ops.take_along_axis(patches, ops.expand_dims(source, -1), axis=1)
        mask_token = ops.cast(self.mask_token, patches.dtype)
        out = ops.where(ops.expand_dims(randomised, -1), replacement, patches)
        out = ops.where(ops.expand_dims(masked, -1), mask_token, out)
        draws = {
            "corrupted": corrupted,
            "masked": masked,
            "randomised": randomised,
            "source": source,
        }
        return out, draws

    def call(self, images, training=False):
        out, grid_shape = self.backbone.embed_patches(images, training=training)
        patches, draws = self.corrupt(out["patches"])
        encoded = self.backbone.encode(patches, grid_shape, training=training)["encoded"]
        tokens = encoded[:, self.backbone.num_prefix_tokens :]
        predictions = self.head(tokens)
        if self.target == "downsampled_color":
            predictions = ops.reshape(
                predictions,
                (ops.shape(tokens)[0], ops.shape(tokens)[1], self.downsample**2, self.num_classes),
            )
        return {"predictions": predictions, "corrupted": ops.cast(draws["corrupted"], "float32")}

    def targets(self, images):
        """What each patch should be predicted as (``patch_color_targets``).

        Returns:
            int32 ``(B, N)`` (``mean_color``), int32 ``(B, N, d * d)``
            (``downsampled_color``) or float32 ``(B, N, p * q * C)``
            (``pixels``).
        """
        if self.target == "mean_color":
            return patch_color_targets(images, self.patch_pixels, self.bits)
        if self.target == "downsampled_color":
            return patch_color_targets(images, self.patch_pixels, self.bits, self.downsample)
        pixels = patch_color_targets(images, self.patch_pixels, None, self.patch_pixels)
        return ops.reshape(pixels, (ops.shape(pixels)[0], ops.shape(pixels)[1], -1))

    def _per_patch(self, images, y_pred):
        """``(losses, correct or None, weights)`` per prediction, each ``(B, N[, d * d])``."""
        targets = self.targets(images)
        predictions = y_pred["predictions"]
        weights = y_pred["corrupted"]
        if self.target == "pixels":
            return ops.mean(ops.square(predictions - targets), axis=-1), None, weights
        losses = ops.sparse_categorical_crossentropy(targets, predictions, from_logits=True)
        correct = ops.cast(ops.argmax(predictions, axis=-1) == targets, "float32")
        if self.target == "downsampled_color":
            weights = ops.broadcast_to(ops.expand_dims(weights, -1), ops.shape(losses))
        return losses, correct, weights

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean loss over the corrupted patches (labels ``y`` are ignored).

        Under ``tf.distribute`` it is this replica's share (divided by the
        replicas, whose gradients are summed), as Keras' own losses are.
        """
        losses, _, weights = self._per_patch(x, y_pred)
        loss = ops.sum(losses * weights) / ops.maximum(ops.sum(weights), 1.0)
        for extra in self.losses:
            loss = loss + ops.sum(extra)
        return _replica_share(loss)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if self.accuracy_tracker is not None:
            _, correct, weights = self._per_patch(x, y_pred)
            self.accuracy_tracker.update_state(correct, sample_weight=weights)
        return self.get_metrics_result()

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "target": self.target,
            "bits": self.bits,
            "corruption_rate": self.corruption_rate,
            "mask_rate": self.mask_rate,
            "random_rate": self.random_rate,
            "downsample": self.downsample,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
