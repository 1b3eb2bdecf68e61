"""The variant table: one source of truth for every ViT and hybrid size.

A variant string is ``"<size>/<patch>"`` (``"B/16"``) or, for hybrids,
``"<resnet>+<size>/<patch>"`` (``"R50+B/16"``). Factories such as
``keras_vit.ViT_B16`` are generated from ``VARIANTS`` in ``keras_vit.models``.
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
    "S/32": ("S", 32, None),
    "B/8": ("B", 8, None),
    "B/16": ("B", 16, None),
    "B/32": ("B", 32, None),
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
        raise ValueError(
            f"Unknown ViT variant {variant!r}; known variants: "
            f"{', '.join(VARIANTS)}."
        )
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
