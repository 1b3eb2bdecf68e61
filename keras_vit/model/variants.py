"""The variant table: one source of truth for every ViT and hybrid size.

A variant string is ``"<size>/<patch>"`` (``"B/16"``) or, for hybrids,
``"<resnet>+<size>/<patch>"`` (``"R50+B/16"``). Factories such as
``keras_vit.ViT_B16`` are generated from ``VARIANTS`` in ``keras_vit.model.vit``.
"""

from __future__ import annotations

# Transformer sizes (paper, Table 1; Ti from DeiT / AugReg).
SIZES = {
    "Ti": dict(hidden_size=192, num_layers=12, num_heads=3, mlp_dim=768),
    "S": dict(hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536),
    "B": dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
    "L": dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096),
    "H": dict(hidden_size=1280, num_layers=32, num_heads=16, mlp_dim=5120),
}

# ResNet stems of the hybrids: stage depths of the BiT ResNet v2 ("R" alone
# is the root only: conv 7x7/2 + max-pool, stride 4).
RESNETS = {"R": (), "R26": (2, 2, 2, 2), "R50": (3, 4, 9)}

# variant -> (size, patch size on the pixels or the ResNet feature map,
#             resnet stage depths or None).
VARIANTS = {
    "Ti/16": ("Ti", 16, None),
    "S/16": ("S", 16, None),
    "S/14": ("S", 14, None),  # DINOv2
    "S/32": ("S", 32, None),
    "B/8": ("B", 8, None),
    "B/14": ("B", 14, None),  # DINOv2
    "B/16": ("B", 16, None),
    "B/32": ("B", 32, None),
    "L/14": ("L", 14, None),  # DINOv2
    "L/16": ("L", 16, None),
    "L/32": ("L", 32, None),
    "H/14": ("H", 14, None),
    "R+Ti/16": ("Ti", 8, RESNETS["R"]),
    "R26+S/32": ("S", 1, RESNETS["R26"]),
    "R26+B/32": ("B", 1, RESNETS["R26"]),
    "R50+B/16": ("B", 1, RESNETS["R50"]),
    "R50+L/32": ("L", 1, (3, 4, 6, 3)),
}


def variant_config(variant):
    """Model config (keyword arguments of ``ViT``) of a variant string.

    Args:
        variant: str, e.g. ``"B/16"`` or ``"R50+B/16"``.

    Returns:
        dict with ``patch_size``, ``hidden_size``, ``num_layers``,
        ``num_heads``, ``mlp_dim`` and ``resnet_layers``.

    Raises:
        ValueError: for an unknown variant, listing the known ones.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown ViT variant {variant!r}; known variants: {', '.join(VARIANTS)}.")
    size, patch, resnet_layers = VARIANTS[variant]
    return dict(
        patch_size=patch,
        resnet_layers=None if resnet_layers is None else tuple(resnet_layers),
        **SIZES[size],
    )


def factory_name(variant):
    """Python name of a variant's factory: ``"R50+B/16"`` -> ``"R50_ViT_B16"``."""
    stem, _, vit = variant.rpartition("+")
    name = "ViT_" + vit.replace("/", "")
    return f"{stem}_{name}" if stem else name


def resnet_stride(resnet_layers):
    """Total stride of a BiT ResNet stem.

    4 for the root alone (conv /2, max-pool /2); every stage after the
    first halves the feature map again.

    Args:
        resnet_layers: tuple of int. Units per stage (``()`` for the root).
    """
    return 4 * 2 ** max(len(resnet_layers) - 1, 0)


def total_stride(patch_size, resnet_layers=None):
    """Pixels per patch-grid step ``(rows, cols)``: patch size, times a hybrid's stem stride.

    Args:
        patch_size: int or (int, int). Patch size on the pixels (or on the
            ResNet feature map).
        resnet_layers: tuple of int or None. Stage depths of a hybrid's stem.
    """
    patch = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    stem = 1 if resnet_layers is None else resnet_stride(resnet_layers)
    return (stem * patch[0], stem * patch[1])


def standard_num_heads(hidden_size, where="the checkpoint"):
    """Heads of the standard ViT size of a width (``SIZES``), for files that do not state them.

    Raises:
        ValueError: for a width that is not a standard one, naming
            ``num_heads`` as the argument to pass.
    """
    for size in SIZES.values():
        if size["hidden_size"] == hidden_size:
            return size["num_heads"]
    raise ValueError(
        f"Cannot tell the number of attention heads of {where}: hidden size "
        f"{hidden_size} is not a standard ViT width and the checkpoint has no "
        "config.json saying it; pass num_heads=..."
    )


def resnet_output_channels(resnet_layers, width):
    """Channels of a BiT ResNet stem's feature map ``(batch, h, w, channels)``.

    ``width`` for the root alone, else ``4 * width * 2 ** (stages - 1)``.
    """
    if not resnet_layers:
        return width
    return 4 * width * 2 ** (len(resnet_layers) - 1)


def _resnet_parameters(resnet_layers, width, channels):
    """Weights of a BiT ResNet stem: bias-free convs, GroupNorm scale + bias."""
    count = 7 * 7 * channels * width + 2 * width  # conv_root, gn_root
    in_channels = width
    for stage, depth in enumerate(resnet_layers):
        mid = width * 2**stage
        out = 4 * mid
        for unit in range(depth):
            count += in_channels * mid + 9 * mid * mid + mid * out  # conv1..3
            count += 2 * (mid + mid + out)  # gn1..3
            if unit == 0:  # channels change (stage 1) or strided (later)
                count += in_channels * out + 2 * out  # conv_proj, gn_proj
            in_channels = out
    return count


def _encoder_parameters(hidden_size, num_layers, mlp_dim, layer_scale):
    """Weights of the transformer blocks (with LayerScale gammas) and the final LayerNorm."""
    attention = 4 * (hidden_size * hidden_size + hidden_size)
    mlp = 2 * hidden_size * mlp_dim + mlp_dim + hidden_size
    scales = 2 * hidden_size if layer_scale else 0
    return num_layers * (attention + mlp + 4 * hidden_size + scales) + 2 * hidden_size


def _map_head_parameters(hidden_size, mlp_dim):
    """Probe, attention, LayerNorm and MLP of a MAP head."""
    attention = 4 * (hidden_size * hidden_size + hidden_size)
    mlp = 2 * hidden_size * mlp_dim + mlp_dim + hidden_size
    return hidden_size + attention + 2 * hidden_size + mlp


def count_parameters(
    variant,
    image_size=224,
    num_classes=1000,
    *,
    include_top=True,
    classifier="token",
    class_token=None,
    distillation_token=False,
    num_register_tokens=0,
    posemb="learn",
    layer_scale_init=None,
    fc_norm=False,
    representation_size=None,
    channels=3,
    resnet_width=64,
    **overrides,
):
    """Number of weights of a variant, computed from the table (nothing is built).

    Equals ``ViT(...).count_params()`` for the same arguments, e.g.
    ``count_parameters("B/16") == 86_567_656``,
    ``count_parameters("R50+B/16") == 98_659_112`` and, for DeiT-B distilled,
    ``count_parameters("B/16", distillation_token=True) == 87_338_192``.

    Args:
        variant: str, e.g. ``"B/16"`` or ``"R50+B/16"``.
        image_size: int or (int, int). Input height and width; sets the
            number of position embeddings.
        num_classes: int. Classes of the head.
        include_top: bool. Count the head.
        classifier, class_token, distillation_token, num_register_tokens,
        posemb, layer_scale_init, fc_norm: as ``keras_vit.ViT``.
        representation_size: int or None. Pre-logits layer width.
        channels: int. Input channels.
        resnet_width: int. Root width of a hybrid's ResNet stem.
        **overrides: entries of ``variant_config`` to change
            (``patch_size``, ``hidden_size``, ``num_layers``, ``num_heads``,
            ``mlp_dim``, ``resnet_layers``).

    Raises:
        ValueError: for an unknown variant or override, or an image size not
            divisible by the total stride.
    """
    config = variant_config(variant)
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(
            f"Unknown overrides {sorted(unknown)}; count_parameters accepts "
            f"{sorted(config)} and its keyword arguments."
        )
    config.update(overrides)
    patch = config["patch_size"]
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    hidden = config["hidden_size"]
    resnet_layers = config["resnet_layers"]
    count = 0
    embed_channels = channels
    if resnet_layers is not None:
        count += _resnet_parameters(resnet_layers, resnet_width, channels)
        embed_channels = resnet_output_channels(resnet_layers, resnet_width)
    stride = total_stride(patch, resnet_layers)
    if size[0] % stride[0] or size[1] % stride[1]:
        raise ValueError(
            f"image_size {size} is not divisible by the total stride {stride} of {variant!r}."
        )
    if class_token is None:
        class_token = classifier in ("token", "unpooled")
    prefix = int(class_token) + int(distillation_token) + num_register_tokens
    grid = (size[0] // stride[0]) * (size[1] // stride[1])
    table = {"learn": prefix + grid, "learn_grid": grid}.get(posemb, 0)
    count += patch[0] * patch[1] * embed_channels * hidden + hidden  # embedding
    count += prefix * hidden + table * hidden  # prefix tokens, posembed_input
    count += _encoder_parameters(hidden, config["num_layers"], config["mlp_dim"], layer_scale_init)
    if classifier == "unpooled":
        return count
    if classifier == "map":
        count += _map_head_parameters(hidden, config["mlp_dim"])
    features = hidden  # fc_norm replaces the final LayerNorm: the same count
    if representation_size:
        count += hidden * representation_size + representation_size
        features = representation_size
    if include_top:
        heads = 2 if distillation_token else 1
        count += heads * (features * num_classes + num_classes)
    return count
