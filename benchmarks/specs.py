"""What is measured: model sizes, tasks, precisions, and the FLOPs of a ViT.

Model sizes come from ``keras_vit.model.variants`` (the one variant table), so every
implementation builds exactly the same architecture.
"""

from __future__ import annotations

from keras_vit.model import variants

IMAGE_SIZE = 224
NUM_CLASSES = 1000

# task -> (variant, batch size, training?)
TASKS = {
    "infer_b1": ("B/16", 1, False),
    "infer_b16": ("B/16", 16, False),
    "train": ("S/16", 16, True),
}

PRECISIONS = ("fp32", "bf16", "int8")


def model_spec(variant):
    """Architecture of a variant as plain numbers.

    Returns:
        dict with ``patch_size``, ``hidden_size``, ``num_layers``,
        ``num_heads``, ``mlp_dim``, ``image_size`` and ``num_classes``.
    """
    config = variants.variant_config(variant)
    if config["resnet_layers"] is not None:
        raise ValueError(f"benchmarks cover plain ViTs only, got {variant!r}.")
    return dict(
        patch_size=config["patch_size"],
        hidden_size=config["hidden_size"],
        num_layers=config["num_layers"],
        num_heads=config["num_heads"],
        mlp_dim=config["mlp_dim"],
        image_size=IMAGE_SIZE,
        num_classes=NUM_CLASSES,
    )


def forward_flops(spec):
    """Multiply-add FLOPs (2 per MAC) of one image's forward pass.

    Counts the matrix products only (patch embedding, QKV, attention
    ``QK^T`` and ``PV``, attention output, MLP, head); norms, softmax and
    GELU are a fraction of a percent.
    """
    d, m = spec["hidden_size"], spec["mlp_dim"]
    patches = (spec["image_size"] // spec["patch_size"]) ** 2
    tokens = patches + 1
    embed = 2 * patches * spec["patch_size"] ** 2 * 3 * d
    per_layer = 2 * tokens * d * (3 * d + d + 2 * m) + 2 * 2 * tokens * tokens * d
    head = 2 * d * spec["num_classes"]
    return embed + spec["num_layers"] * per_layer + head


def task_flops(task):
    """FLOPs per image of a task: forward, or forward + backward (3x) in training."""
    variant, _, training = TASKS[task]
    flops = forward_flops(model_spec(variant))
    return 3 * flops if training else flops
