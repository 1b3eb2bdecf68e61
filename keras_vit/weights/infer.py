"""The ``ViT`` arguments a checkpoint implies, read from its tensors and config.

Shapes give the width, depth, MLP size, patch size, classes, representation
size, classifier and ResNet stem; the head count comes from the official
kernels' ``(hidden, heads, head_dim)`` layout, a Hugging Face / timm
``config.json``, or the standard sizes of ``keras_vit.model.variants.SIZES``.
"""

from __future__ import annotations

import re

from keras_vit.model import variants
from keras_vit.model.posemb import infer_grid_shape
from keras_vit.weights.assign import CLASS_TOKEN, POSEMB, to_keras_tensors
from keras_vit.weights.readers import FORMAT_DEFAULTS

# Hugging Face ``hidden_act`` values that are the tanh approximation.
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh")
_OFFICIAL_QUERY = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"


def num_heads_of(checkpoint, num_heads=None):
    """Attention heads of a checkpoint.

    Args:
        checkpoint: a ``Checkpoint``.
        num_heads: int or None. Explicit value (wins).

    Raises:
        ValueError: if the checkpoint does not tell and the width is not a
            standard one.
    """
    if num_heads is not None:
        return int(num_heads)
    config = checkpoint.config
    if checkpoint.format == "official" and _OFFICIAL_QUERY in checkpoint.tensors:
        return int(checkpoint.tensors[_OFFICIAL_QUERY].shape[1])
    if "num_attention_heads" in config:
        return int(config["num_attention_heads"])
    model_args = config.get("model_args", {})
    if "num_heads" in model_args:
        return int(model_args["num_heads"])
    hidden = _hidden_size(checkpoint)
    for size in variants.SIZES.values():
        if size["hidden_size"] == hidden:
            return size["num_heads"]
    raise ValueError(
        f"Cannot tell the number of attention heads of {checkpoint.path}: "
        f"hidden size {hidden} is not a standard ViT width and the checkpoint "
        "has no config.json saying it; pass num_heads=..."
    )


def _hidden_size(checkpoint):
    for name, array in checkpoint.tensors.items():
        if name.endswith(("embedding/kernel", "patch_embed.proj.weight", "projection.weight")):
            return int(array.shape[-1] if checkpoint.format == "official" else array.shape[0])
    raise ValueError(f"{checkpoint.path} has no patch-embedding tensor.")


def checkpoint_config(checkpoint, num_heads=None):
    """``ViT`` keyword arguments that reproduce a checkpoint's model.

    Args:
        checkpoint: a ``Checkpoint``.
        num_heads: int or None. Heads, when the checkpoint cannot tell.

    Returns:
        dict of ``ViT`` arguments: ``image_size`` (None when a non-square
        grid leaves it unknown), ``patch_size``,
        ``hidden_size``, ``num_layers``, ``num_heads``, ``mlp_dim``,
        ``num_classes``, ``include_top``, ``classifier``,
        ``representation_size``, ``channels``, ``layer_norm_epsilon``,
        ``semantics``, ``posemb_interpolation``, ``resnet_layers``,
        ``resnet_width``.
    """
    heads = num_heads_of(checkpoint, num_heads)
    tensors, _, _ = to_keras_tensors(checkpoint, heads)
    if "embedding/kernel" not in tensors or POSEMB not in tensors:
        raise ValueError(
            f"{checkpoint.path} lacks the patch or position embedding; it is not "
            "a ViT checkpoint keras-vit can read."
        )
    kernel = tensors["embedding/kernel"]
    layers = sorted(
        {int(m.group(1)) for p in tensors if (m := re.match(r"encoderblock_(\d+)/", p))}
    )
    config = dict(
        patch_size=tuple(int(s) for s in kernel.shape[:2]),
        hidden_size=int(kernel.shape[-1]),
        num_layers=len(layers),
        num_heads=heads,
        mlp_dim=int(tensors["encoderblock_0/MlpBlock_3/Dense_0/kernel"].shape[-1]),
        classifier="token" if CLASS_TOKEN in tensors else "gap",
        channels=int(kernel.shape[2]),
        layer_norm_epsilon=1e-6,
        resnet_layers=None,
        **FORMAT_DEFAULTS[checkpoint.format],
    )
    stride = config["patch_size"]
    if "resnet/conv_root/kernel" in tensors:
        root = tensors["resnet/conv_root/kernel"]
        config.update(resnet_layers=_resnet_layers(tensors), resnet_width=int(root.shape[-1]))
        config["channels"] = int(root.shape[2])
        stem = variants.resnet_stride(config["resnet_layers"])
        stride = (stride[0] * stem, stride[1] * stem)
    config.update(_top(tensors))
    config["image_size"] = _image_size(tensors[POSEMB], config, stride, checkpoint)
    if checkpoint.format == "hf":
        hf = checkpoint.config
        config["layer_norm_epsilon"] = float(hf.get("layer_norm_eps", 1e-12))
        if hf.get("hidden_act") in _TANH_GELUS:
            config["semantics"] = "official"
    return config


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


def _image_size(posemb, config, stride, checkpoint):
    hf_size = checkpoint.config.get("image_size")
    if hf_size is not None:
        return (hf_size, hf_size) if isinstance(hf_size, int) else tuple(hf_size)
    input_size = checkpoint.config.get("pretrained_cfg", {}).get("input_size")
    if input_size:
        return tuple(int(s) for s in input_size[-2:])
    prefix = 1 if config["classifier"] == "token" and checkpoint.posemb_prefix != 0 else 0
    try:
        rows, cols = infer_grid_shape(posemb.shape[1] - prefix)
    except ValueError:
        return None  # a non-square grid: the caller must give image_size
    return (rows * stride[0], cols * stride[1])
