"""Checkpoints: official ``.npz``, timm and Hugging Face weights, and Keras files.

Entry points:

- ``load_weights(model, weights)``: loads a file, folder, registry name or
  URL into a built ``ViT`` (position embeddings resized to the model's grid;
  new heads left initialised with a warning; nothing assigned unless every
  tensor fits).
- ``model_from_checkpoint(weights)``: builds the ``ViT`` a checkpoint
  describes (its own config for Hugging Face / timm folders) and loads it.
- ``save_official_npz``, ``save_huggingface``, ``save_keras``: writers.
- ``REGISTRY``: named official checkpoints, downloaded once into
  ``$KERAS_VIT_CACHE`` (default ``~/.cache/keras_vit``).
"""

from __future__ import annotations

import os
import urllib.parse

from keras_vit.weights.infer import checkpoint_config
from keras_vit.weights.assign import CheckpointMismatchError, assign_checkpoint
from keras_vit.weights.readers import FORMAT_DEFAULTS, Checkpoint, read_checkpoint
from keras_vit.weights.registry import REGISTRY, download, fetch, get_entry
from keras_vit.weights.writers import save_huggingface, save_keras, save_official_npz

KERAS_SUFFIXES = (".weights.h5", ".keras")

# Checkpoint facts that become a factory's defaults (explicit arguments win).
_DEFAULT_KEYS = (
    "image_size",
    "num_classes",
    "representation_size",
    "classifier",
    "layer_norm_epsilon",
    "semantics",
    "posemb_interpolation",
)

__all__ = [
    "FORMAT_DEFAULTS",
    "REGISTRY",
    "Checkpoint",
    "CheckpointMismatchError",
    "checkpoint_config",
    "download",
    "load_weights",
    "model_from_checkpoint",
    "read_checkpoint",
    "resolve_weights",
    "save_huggingface",
    "save_keras",
    "save_official_npz",
]


def resolve_weights(weights):
    """Local path of ``weights``: a path, a registry name or a URL.

    Returns:
        ``(path, WeightsEntry or None)``.

    Raises:
        FileNotFoundError: for a path that does not exist.
        ValueError: for a bare name that is not in ``REGISTRY`` (the known
            names are listed).
    """
    weights = os.fspath(weights)
    if os.path.exists(weights):
        return weights, None
    if weights in REGISTRY:
        return fetch(weights), REGISTRY[weights]
    if urllib.parse.urlparse(weights).scheme in ("http", "https", "file"):
        return download(weights), None
    if os.sep in weights or os.path.splitext(weights)[1] in (".npz", ".safetensors", ".h5", ".keras"):
        raise FileNotFoundError(f"Weights file not found: {weights}")
    return None, get_entry(weights)  # raises, listing the known names


def prepare_weights(weights, variant=None, num_heads=None):
    """Reads ``weights`` once and derives a model's defaults from it.

    Args:
        weights: path, folder, registry name, URL or ``Checkpoint``.
        variant: str or None. The factory's variant, checked against a
            registry entry.
        num_heads: int or None. Heads, for checkpoints that do not store them.

    Returns:
        ``(source, defaults)``: a ``Checkpoint`` (or the path of a Keras
        file) and a dict of ``ViT`` arguments the checkpoint implies
        (``image_size``, ``num_classes``, ``representation_size``,
        ``classifier``, ``layer_norm_epsilon``, ``semantics``,
        ``posemb_interpolation``).
    """
    entry = None
    if isinstance(weights, Checkpoint):
        checkpoint = weights
    else:
        _check_registry_variant(weights, variant)  # before any download
        path, entry = resolve_weights(weights)
        if path.endswith(KERAS_SUFFIXES):
            return path, {}
        checkpoint = read_checkpoint(path)
    config = checkpoint_config(checkpoint, num_heads)
    defaults = {key: config[key] for key in _DEFAULT_KEYS}
    if entry is not None:
        defaults["image_size"] = (entry.resolution, entry.resolution)
    return checkpoint, defaults


def _check_registry_variant(weights, variant):
    entry = REGISTRY.get(os.fspath(weights))
    if entry is None or variant is None or entry.variant == variant:
        return
    from keras_vit.model.variants import factory_name

    raise ValueError(
        f"Weights {weights!r} are for ViT-{entry.variant}, not ViT-{variant}; "
        f"use keras_vit.{factory_name(entry.variant)}(weights={weights!r})."
    )


def load_weights(model, weights, posemb_interpolation=None):
    """Loads ``weights`` into a built ``ViT``.

    Args:
        model: a built ``keras_vit.ViT``.
        weights: a ``.weights.h5`` / ``.keras`` file, an official ``.npz``
            (vit_jax, AugReg or big_vision layout), a timm or Hugging Face
            ``.safetensors`` file or folder, a ``REGISTRY`` name, a URL, or a
            ``Checkpoint``.
        posemb_interpolation: str or None. How a position embedding of
            another grid is resized; None uses the model's own
            ``posemb_interpolation``.

    Returns:
        The model.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: for a corrupt / pickled / unsupported file, an unknown
            name, or tensors that do not fit (``CheckpointMismatchError``
            lists them all; nothing is assigned then).
    """
    if isinstance(weights, Checkpoint):
        checkpoint = weights
    else:
        path, _ = resolve_weights(weights)
        if path.endswith(KERAS_SUFFIXES):
            model.load_weights(path)
            return model
        checkpoint = read_checkpoint(path)
    assign_checkpoint(model, checkpoint, posemb_interpolation)
    return model


def model_from_checkpoint(weights, num_heads=None, **overrides):
    """Builds the ``ViT`` a checkpoint describes and loads it.

    Hugging Face folders are read with their ``config.json`` (LayerNorm eps
    1e-12, ``hidden_act``), timm folders with theirs; ``.npz`` files and bare
    ``.safetensors`` from their tensor shapes.

    Args:
        weights: path, folder, registry name, URL or ``Checkpoint``.
        num_heads: int or None. Heads, when neither the tensors nor a config
            tell (non-standard widths in timm / HF files without config).
        **overrides: ``ViT`` arguments replacing the checkpoint's (e.g.
            ``image_size=384``, ``num_classes=10``, ``semantics="timm"``).

    Returns:
        A built, loaded ``keras_vit.ViT``.
    """
    from keras_vit.model.vit import ViT

    if not isinstance(weights, Checkpoint):
        path, _ = resolve_weights(weights)
        if path.endswith(".keras"):
            import keras

            return keras.saving.load_model(path, safe_mode=True)
        if path.endswith(".weights.h5"):
            raise ValueError(
                f"{path} holds weights without an architecture; build the model "
                "with its factory, e.g. keras_vit.ViT_B16(weights=path, ...) "
                "(keras-vit convert --variant B/16)."
            )
        weights = read_checkpoint(path)
    config = checkpoint_config(weights, num_heads)
    config.update(overrides)
    if config["image_size"] is None:
        raise ValueError(
            f"The position embedding of {weights.path} is not a square grid; "
            "pass image_size=(height, width) of the model it was trained with."
        )
    if config.get("num_classes") is None:
        config["num_classes"] = 1000 if config.get("include_top") else None
    model = ViT(**config)
    assign_checkpoint(model, weights)
    return model
