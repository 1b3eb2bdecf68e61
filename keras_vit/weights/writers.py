"""Writing keras-vit weights back out: official / big_vision ``.npz``, Hugging Face, Keras.

Writers use the same mapping tables as the readers (inverted), so a model
fine-tuned here can go back to the JAX / big_vision / timm ecosystem
(``save_official_npz``, in the vit_jax or the big_vision layout) or to
``transformers`` (``save_huggingface``). Every file is written to a temporary
file in the target folder and moved into place, so an interrupted write never
leaves a half file. A model whose numerics are not the ``.npz`` defaults
(a Hugging Face model's LayerNorm epsilon of 1e-12, timm's exact GELU) gets
them written beside the file (``<file>.keras_vit.json``), which the reader
applies, so reloading reproduces the model exactly.
"""

from __future__ import annotations

import os

import numpy as np

from keras_vit.atomic import atomic_path, write_json_atomic
from keras_vit.messages import logger
from keras_vit.weights.assign import model_variables
from keras_vit.weights.mappings import (
    LINEN_TO_PRE_LINEN,
    from_keras_layout,
    keras_to_source,
)
from keras_vit.weights.readers import FORMAT_DEFAULTS, NUMERICS_KEYS, NUMERICS_SUFFIX

NPZ_LAYOUTS = ("vit_jax", "big_vision")
_PRE_LINEN_TO_LINEN = {old: new for new, old in LINEN_TO_PRE_LINEN.items()}
_OFFICIAL_POSEMB = "Transformer/posembed_input/pos_embedding"


def checkpoint_tensors(model, fmt):
    """The model's weights as a checkpoint of format ``fmt``.

    Args:
        model: a built ``keras_vit.ViT``.
        fmt: str. ``"official"``, ``"timm"`` or ``"hf"``.

    Returns:
        dict ``{checkpoint name: float32 np.ndarray}``.

    Raises:
        ValueError: if a variable has no counterpart in the format.
    """
    resolve = keras_to_source(fmt)
    tensors, parts = {}, {}
    for path, variable in model_variables(model).items():
        name, rule = resolve(path)
        if name is None:
            raise ValueError(f"The {fmt} format has no tensor for variable {path!r}.")
        value = from_keras_layout(np.asarray(variable, dtype=np.float32), rule)
        if rule.split is not None:
            parts.setdefault(name, {})[rule.split[0]] = value
        else:
            tensors[name] = np.ascontiguousarray(value)
    for name, pieces in parts.items():
        tensors[name] = np.ascontiguousarray(np.concatenate([pieces[k] for k in sorted(pieces)], 0))
    return tensors


def save_official_npz(model, path, layout="vit_jax"):
    """Writes an official ``.npz``: the vit_jax / AugReg or the big_vision layout.

    ``vit_jax``: pre-linen block names, the position embedding under
    ``Transformer/posembed_input`` with its class-token entry (readable by the
    official JAX code and timm's ``.npz`` loader). ``big_vision``: linen names
    (``LayerNorm_0``, ``MultiHeadDotProductAttention_0``, ``LayerNorm_1``,
    ``MlpBlock_0``), unscanned, a top-level ``pos_embedding`` of the patch
    grid only (a class-token entry is folded into ``cls``, which is what
    big_vision's own loader does with old files) and none for sin-cos models.
    Both read back with ``keras_vit`` (``weights=path``).

    Args:
        model: a built ``keras_vit.ViT``.
        path: str. Destination ``.npz`` file.
        layout: str. ``"vit_jax"`` or ``"big_vision"``.

    Returns:
        str. ``path``.

    Raises:
        ValueError: for an unknown layout, or a model the layout cannot hold
            (distillation or register tokens, LayerScale, fc_norm).
    """
    if layout not in NPZ_LAYOUTS:
        raise ValueError(f"layout must be one of {NPZ_LAYOUTS}, got {layout!r}.")
    _check_official_compatible(model)
    tensors = checkpoint_tensors(model, "official")
    if layout == "big_vision":
        tensors = _big_vision_tensors(tensors, model)
    elif model.posemb == "learn_grid" and model.class_token_enabled:
        posemb = tensors[_OFFICIAL_POSEMB]  # vit_jax tables have the class-token entry
        tensors[_OFFICIAL_POSEMB] = np.concatenate([np.zeros_like(posemb[:, :1]), posemb], 1)
    with atomic_path(path, ".npz") as partial, open(partial, "wb") as f:
        np.savez(f, **tensors)
    _write_numerics(model, os.fspath(path) + NUMERICS_SUFFIX)
    return path


def _check_official_compatible(model):
    problems = [
        what
        for what, present in (
            ("a distillation token (DeiT)", model.distillation_token),
            ("register tokens", model.num_register_tokens),
            ("LayerScale", model.layer_scale_init is not None),
            ("fc_norm", model.fc_norm),
        )
        if present
    ]
    if problems:
        raise ValueError(
            "The official .npz layouts have no " + ", no ".join(problems) + "; save this model "
            "as .keras (keras-vit convert SRC model.keras) instead."
        )


def _big_vision_tensors(tensors, model):
    """vit_jax names -> big_vision's: linen block names, the grid-only ``pos_embedding``."""
    renamed = {}
    for name, value in tensors.items():
        parts = name.split("/")
        if len(parts) > 2 and parts[1].startswith("encoderblock_"):
            parts[2] = _PRE_LINEN_TO_LINEN.get(parts[2], parts[2])
        renamed["/".join(parts)] = value
    posemb = renamed.pop(_OFFICIAL_POSEMB, None)
    if posemb is not None:
        prefix = model.position_embedding.num_prefix_tokens
        if prefix:  # fold the class token's entry into the token itself
            renamed["cls"] = renamed["cls"] + posemb[:, :1]
        renamed["pos_embedding"] = posemb[:, prefix:]
    return renamed


def _write_numerics(model, sidecar):
    """``<file>.keras_vit.json`` with the numerics that differ from the ``.npz`` defaults."""
    defaults = {"layer_norm_epsilon": 1e-6, **FORMAT_DEFAULTS["official"]}
    numerics = {key: getattr(model, key) for key in NUMERICS_KEYS}
    if numerics == {key: defaults[key] for key in NUMERICS_KEYS}:
        if os.path.exists(sidecar):
            os.remove(sidecar)  # a stale one from an earlier write
        return
    write_json_atomic(numerics, sidecar)
    logger.info("Wrote the model's numerics %s beside the .npz: %s", numerics, sidecar)


def save_huggingface(model, folder):
    """Writes ``model.safetensors`` + ``config.json`` for ``transformers``.

    ``ViTForImageClassification.from_pretrained(folder)`` then gives the same
    logits (``include_top=False`` writes a ``ViTModel``).

    Args:
        model: a built plain ``keras_vit.ViT`` with ``classifier="token"`` and
            no ``pre_logits`` layer (the layouts Hugging Face's ViT has).
        folder: str. Destination folder (created).

    Raises:
        ValueError: for a model Hugging Face's ViT cannot represent.
    """
    from safetensors.numpy import save_file

    _check_huggingface_compatible(model)
    tensors = checkpoint_tensors(model, "hf")
    if not model.include_top:
        tensors = {name.removeprefix("vit."): value for name, value in tensors.items()}
    os.makedirs(folder, exist_ok=True)
    with atomic_path(os.path.join(folder, "model.safetensors"), ".safetensors") as partial:
        save_file(tensors, partial, metadata={"format": "pt"})
    write_json_atomic(huggingface_config(model), os.path.join(folder, "config.json"))
    return folder


def _check_huggingface_compatible(model):
    problems = []
    if model.resnet_layers is not None:
        problems.append("it is a hybrid (ResNet stem)")
    if model.classifier != "token":
        problems.append(f"classifier={model.classifier!r} (Hugging Face ViT pools the class token)")
    if model.pre_logits is not None:
        problems.append("it has a pre_logits layer (ViTForImageClassification has none)")
    if problems:
        raise ValueError(
            "Cannot write this model as a Hugging Face ViT: " + "; ".join(problems) + "."
        )


def huggingface_config(model):
    """``config.json`` contents of a Hugging Face ``ViTConfig`` for ``model``."""

    def square_or_pair(size):
        return size[0] if size[0] == size[1] else list(size)

    config = {
        "architectures": ["ViTForImageClassification" if model.include_top else "ViTModel"],
        "model_type": "vit",
        "hidden_size": model.hidden_size,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads,
        "intermediate_size": model.mlp_dim,
        "hidden_act": "gelu_pytorch_tanh" if model.semantics == "official" else "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": model.layer_norm_epsilon,
        "image_size": square_or_pair(model.image_size),
        "patch_size": square_or_pair(model.patch_size),
        "num_channels": model.channels,
        "qkv_bias": True,
        "encoder_stride": model.patch_size[0],
        "torch_dtype": "float32",
    }
    if model.include_top:
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(model.num_classes)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(model.num_classes)}
    return config


def save_keras(model, path):
    """Writes a ``.keras`` model or ``.weights.h5`` weights file atomically."""
    if path.endswith(".weights.h5"):
        with atomic_path(path, ".weights.h5") as partial:
            model.save_weights(partial, overwrite=True)
    elif path.endswith(".keras"):
        with atomic_path(path, ".keras") as partial:
            model.save(partial, overwrite=True)
    else:
        raise ValueError(f"Expected a .keras or .weights.h5 path, got {path!r}.")
    return path
