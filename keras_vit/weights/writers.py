"""Writing keras-vit weights back out: official ``.npz``, Hugging Face, Keras.

Writers use the same mapping tables as the readers (inverted), so a model
fine-tuned here can go back to the JAX / big_vision / timm ecosystem
(``save_official_npz``) or to ``transformers`` (``save_huggingface``).
Every file is written to a temporary file in the target folder and moved
into place, so an interrupted write never leaves a half file.
"""

from __future__ import annotations

import os

import numpy as np

from keras_vit.atomic import atomic_path, write_json_atomic
from keras_vit.weights.assign import model_variables
from keras_vit.weights.mappings import from_keras_layout, keras_to_source


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
        tensors[name] = np.concatenate([pieces[k] for k in sorted(pieces)], axis=0)
    return tensors


def save_official_npz(model, path):
    """Writes an official (vit_jax / AugReg layout) ``.npz``.

    Readable by ``keras_vit`` (``weights=path``), by the official JAX code
    and by timm's ``.npz`` loader.

    Args:
        model: a built ``keras_vit.ViT``.
        path: str. Destination ``.npz`` file.
    """
    tensors = checkpoint_tensors(model, "official")
    with atomic_path(path, ".npz") as partial, open(partial, "wb") as f:
        np.savez(f, **tensors)
    return path


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
