"""What a checkpoint tells of its model, read from its tensors and config.

Shapes give the width, depth, MLP size, patch size, classes, representation
size, classifier, ResNet stem and the position-embedding grid; the head
count comes from the official kernels' ``(hidden, heads, head_dim)`` layout
or a Hugging Face / timm ``config.json``. What a file cannot tell (the heads
of a bare timm file, the image size of a hybrid's grid) is left ``None``
here: the family's rules for it live with the model
(``keras_vit.model.loading``).
"""

from __future__ import annotations

import math
import re

from keras_vit.weights.mappings import CLASS_TOKEN, PATCH_KERNEL, POSEMB, to_keras_tensors
from keras_vit.weights.readers import FORMAT_DEFAULTS

# Hugging Face ``hidden_act`` values that are the tanh approximation.
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh")
_OFFICIAL_QUERY = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"


def stated_num_heads(checkpoint):
    """Attention heads the checkpoint states, or None when it does not tell.

    The official kernels' ``(hidden, heads, head_dim)`` layout, a Hugging
    Face ``num_attention_heads`` or a timm hub ``model_args.num_heads``.
    """
    config = checkpoint.config
    if checkpoint.format == "official" and _OFFICIAL_QUERY in checkpoint.tensors:
        return int(checkpoint.tensors[_OFFICIAL_QUERY].shape[1])
    if "num_attention_heads" in config:
        return int(config["num_attention_heads"])
    model_args = config.get("model_args", {})
    if "num_heads" in model_args:
        return int(model_args["num_heads"])
    return None


def checkpoint_config(checkpoint):
    """The model facts a checkpoint holds, as ``ViT`` keyword arguments.

    Args:
        checkpoint: a ``Checkpoint``.

    Returns:
        dict with ``patch_size``, ``hidden_size``, ``num_layers``,
        ``num_heads`` (None when the file does not tell), ``mlp_dim``,
        ``num_classes``, ``include_top``, ``classifier``, ``class_token``,
        ``distillation_token``, ``num_register_tokens``, ``posemb``,
        ``layer_scale_init``, ``fc_norm``, ``representation_size``,
        ``channels``, ``layer_norm_epsilon``, ``semantics``,
        ``posemb_interpolation``, ``resnet_layers``, ``resnet_width``,
        ``image_size`` (the config's statement, else None) and
        ``grid_size``: ``(rows, cols)`` of a square position-embedding
        grid, or None (non-square, sin-cos or no table).

    Raises:
        ValueError: for a file without patch embedding or encoder blocks.
    """
    # One head is enough to read every shape but the attention kernels'.
    tensors, _, _ = to_keras_tensors(checkpoint, num_heads=1)
    mlp_kernel = "encoderblock_0/MlpBlock_3/Dense_0/kernel"
    if PATCH_KERNEL not in tensors or mlp_kernel not in tensors:
        raise ValueError(
            f"{checkpoint.path} lacks the patch embedding or the encoder blocks; it is not "
            "a ViT checkpoint keras-vit can read."
        )
    kernel = tensors[PATCH_KERNEL]
    layers = sorted(
        {int(m.group(1)) for p in tensors if (m := re.match(r"encoderblock_(\d+)/", p))}
    )
    config = dict(
        patch_size=tuple(int(s) for s in kernel.shape[:2]),
        hidden_size=int(kernel.shape[-1]),
        num_layers=len(layers),
        num_heads=stated_num_heads(checkpoint),
        mlp_dim=int(tensors[mlp_kernel].shape[-1]),
        channels=int(kernel.shape[2]),
        layer_norm_epsilon=1e-6,
        resnet_layers=None,
        **FORMAT_DEFAULTS[checkpoint.format],
        **_prefix_and_pooling(tensors, checkpoint.config),
    )
    if "resnet/conv_root/kernel" in tensors:
        root = tensors["resnet/conv_root/kernel"]
        config.update(resnet_layers=_resnet_layers(tensors), resnet_width=int(root.shape[-1]))
        config["channels"] = int(root.shape[2])
    config.update(_top(tensors))
    config["image_size"] = _stated_image_size(checkpoint.config)
    config.update(_position_embedding(tensors, checkpoint, config))
    if checkpoint.format == "hf":
        hf = checkpoint.config
        config["layer_norm_epsilon"] = float(hf.get("layer_norm_eps", 1e-12))
        if hf.get("hidden_act") in _TANH_GELUS:
            config["semantics"] = "official"
    config.update(checkpoint.numerics)
    return config


def _prefix_and_pooling(tensors, config):
    """Prefix tokens, LayerScale and pooling from the tensor names (and timm's ``global_pool``)."""
    class_token = CLASS_TOKEN in tensors
    fc_norm = "fc_norm/gamma" in tensors
    if "MAPHead_0/probe" in tensors:
        classifier = "map"
    elif fc_norm or not class_token or config.get("global_pool") == "avg":
        classifier = "gap"
    else:
        classifier = "token"
    registers = tensors.get("reg_token/tokens")
    return dict(
        classifier=classifier,
        class_token=class_token,
        distillation_token="dist_token/tokens" in tensors,
        num_register_tokens=0 if registers is None else int(registers.shape[1]),
        # The initial value only matters for training from scratch: loaded gammas replace it.
        layer_scale_init=LAYER_SCALE_INIT if "encoderblock_0/ls1/gamma" in tensors else None,
        fc_norm=fc_norm,
    )


def _position_embedding(tensors, checkpoint, config):
    """``posemb`` kind and the square grid of a stored table.

    A table with one entry per prefix token and per patch is ``"learn"``; one
    with patch entries only (big_vision's top-level ``pos_embedding``, timm's
    ``no_embed_class``) is ``"learn_grid"``; a big_vision file without a
    table uses the fixed ``"sincos2d"`` embeddings, a timm one none. vit_jax
    and Hugging Face tables always have the prefix entries; a timm table has
    them unless its token count is a square grid without them (or the
    config's image size says so).
    """
    if POSEMB not in tensors:
        return dict(
            posemb="sincos2d" if checkpoint.layout == "big_vision" else "none", grid_size=None
        )
    tokens = int(tensors[POSEMB].shape[1])
    prefix = int(config["class_token"]) + int(config["distillation_token"])
    prefix += config["num_register_tokens"]
    grid_only = checkpoint.posemb_prefix == 0 and prefix > 0
    if checkpoint.format == "timm" and prefix:
        stated = config["image_size"]
        if stated is not None:
            cells = (stated[0] // config["patch_size"][0]) * (stated[1] // config["patch_size"][1])
            grid_only = tokens == cells
        else:
            grid_only = _square_grid(tokens - prefix) is None and _square_grid(tokens) is not None
    if grid_only:
        return dict(posemb="learn_grid", grid_size=_square_grid(tokens))
    return dict(posemb="learn", grid_size=_square_grid(tokens - prefix))


def _resnet_layers(tensors):
    units = {}
    for path in tensors:
        match = re.match(r"resnet/block(\d+)/unit(\d+)/", path)
        if match:
            stage, unit = int(match.group(1)), int(match.group(2))
            units[stage] = max(units.get(stage, 0), unit)
    return tuple(units[s] for s in sorted(units))


def _top(tensors):
    top = dict(include_top="head/kernel" in tensors, representation_size=None, num_classes=None)
    if top["include_top"]:
        top["num_classes"] = int(tensors["head/kernel"].shape[-1])
    if "pre_logits/kernel" in tensors:
        top["representation_size"] = int(tensors["pre_logits/kernel"].shape[-1])
    return top


def _stated_image_size(config):
    """The input size a Hugging Face or timm ``config.json`` states, or None."""
    hf_size = config.get("image_size")
    if hf_size is not None:
        return (hf_size, hf_size) if isinstance(hf_size, int) else tuple(hf_size)
    input_size = config.get("pretrained_cfg", {}).get("input_size")
    if input_size:
        return tuple(int(s) for s in input_size[-2:])
    return None


#: ``layer_scale_init`` of a model built from a checkpoint with LayerScale (timm's default).
LAYER_SCALE_INIT = 1e-5


def _square_grid(tokens):
    """``(g, g)`` for a square number of grid tokens, else None (non-square grid)."""
    side = math.isqrt(max(int(tokens), 0))
    return (side, side) if side * side == tokens and side else None
