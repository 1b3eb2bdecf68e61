"""Reading checkpoint files into NumPy without executing code.

``read_checkpoint(path)`` returns a ``Checkpoint``: the raw tensors by their
stored names, the detected format (``"official"``, ``"timm"`` or ``"hf"``)
and the checkpoint's own ``config.json`` if it has one. Official ``.npz``
files are read with ``numpy.load(allow_pickle=False)``, ``.safetensors``
with ``safetensors.numpy``; nothing here imports torch or unpickles.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from keras_vit.weights.mappings import LINEN_TO_PRE_LINEN

FORMATS = ("official", "timm", "hf")

# What each format's defaults are when a model is built for it (README).
FORMAT_DEFAULTS = {
    "official": dict(semantics="official", posemb_interpolation="official"),
    "timm": dict(semantics="timm", posemb_interpolation="bicubic"),
    "hf": dict(semantics="timm", posemb_interpolation="bicubic_hf"),
}

_HF_WEIGHTS = "model.safetensors"


@dataclass
class Checkpoint:
    """Tensors of one checkpoint, by stored name, plus what was read with them.

    Attributes:
        format: str. ``"official"``, ``"timm"`` or ``"hf"``.
        tensors: dict ``name -> np.ndarray`` (names normalised to the
            format's mapping table).
        config: dict. The checkpoint's ``config.json`` (HF / timm), or {}.
        path: str. Where it was read from.
        posemb_prefix: int or None. Class-token entries in the stored
            position embedding (0 for big_vision files); None to infer.
    """

    format: str
    tensors: dict
    config: dict = field(default_factory=dict)
    path: str = ""
    posemb_prefix: int | None = None


def read_checkpoint(path):
    """Reads an official ``.npz``, a timm or HF ``.safetensors``, or a folder.

    A folder must hold ``model.safetensors`` (Hugging Face or timm hub
    layout, with ``config.json``) or exactly one ``.npz``/``.safetensors``.

    Args:
        path: str or path-like.

    Returns:
        A ``Checkpoint``.

    Raises:
        FileNotFoundError: if nothing is there.
        ValueError: for a corrupt, truncated or pickled file, or a layout
            that is none of the supported formats.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    config = {}
    if os.path.isdir(path):
        path = _weights_file_in(path)
    config_path = os.path.join(os.path.dirname(path), "config.json")
    if path.endswith(".safetensors") and os.path.isfile(config_path):
        config = _read_json(config_path)
    if path.endswith(".npz"):
        return _official_checkpoint(_read_npz(path), path)
    if path.endswith(".safetensors"):
        return _torch_checkpoint(_read_safetensors(path), config, path)
    raise ValueError(
        f"Unsupported checkpoint {path!r}: expected an official .npz, a timm or "
        "Hugging Face .safetensors file (or its folder), a .weights.h5 or a "
        ".keras file."
    )


def _weights_file_in(folder):
    if os.path.isfile(os.path.join(folder, _HF_WEIGHTS)):
        return os.path.join(folder, _HF_WEIGHTS)
    found = sorted(f for f in os.listdir(folder) if f.endswith((".npz", ".safetensors")))
    if len(found) != 1:
        raise FileNotFoundError(
            f"Expected {_HF_WEIGHTS} or exactly one .npz/.safetensors file in "
            f"{folder}; found {found or 'none'}."
        )
    return os.path.join(folder, found[0])


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"Cannot read checkpoint config {path}: {err}") from None


def _read_npz(path):
    """All arrays of an ``.npz``, read eagerly so corruption shows up here."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: np.asarray(data[name]) for name in data.files}
    except ValueError as err:
        if "allow_pickle" in str(err) or "pickle" in str(err).lower():
            raise ValueError(
                f"Checkpoint {path} holds pickled Python objects; keras-vit only "
                "reads plain arrays (numpy.load(allow_pickle=False)) and will "
                "not execute code from a file."
            ) from None
        raise ValueError(f"Checkpoint {path} is corrupt or truncated: {err}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ValueError(
            f"Checkpoint {path} is not a readable .npz (corrupt or truncated?): {err}"
        ) from None


def _read_safetensors(path):
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(
            f"Checkpoint {path} is not a readable .safetensors file (corrupt or truncated?): {err}"
        ) from None


def _official_checkpoint(tensors, path):
    """Normalises vit_jax, AugReg and big_vision layouts to vit_jax names."""
    posemb_prefix = None
    if any(name.startswith("params/") for name in tensors):
        tensors = {name.removeprefix("params/"): value for name, value in tensors.items()}
    if "pos_embedding" in tensors:
        # big_vision: posemb added before the class token is prepended.
        tensors["Transformer/posembed_input/pos_embedding"] = tensors.pop("pos_embedding")
        posemb_prefix = 0
    renamed = {}
    for name, value in tensors.items():
        parts = name.split("/")
        if len(parts) > 2 and parts[1].startswith("encoderblock_"):
            parts[2] = LINEN_TO_PRE_LINEN.get(parts[2], parts[2])
        renamed["/".join(parts)] = value
    return Checkpoint("official", renamed, {}, path, posemb_prefix)


def _torch_checkpoint(tensors, config, path):
    """timm or Hugging Face, told apart by their tensor names."""
    if any(name.startswith(("vit.", "embeddings.")) for name in tensors):
        if any(name.startswith("embeddings.") for name in tensors):  # ViTModel
            tensors = {
                (name if name.startswith("vit.") else f"vit.{name}"): value
                for name, value in tensors.items()
            }
        return Checkpoint("hf", tensors, config, path)
    if "patch_embed.proj.weight" in tensors:
        if "fc_norm.weight" in tensors:
            raise ValueError(
                f"{path} is a timm model with fc_norm (mean pooling, then "
                "LayerNorm); keras-vit's classifier='gap' applies the final "
                "LayerNorm before pooling, as the official code does, so this "
                "checkpoint cannot be loaded exactly."
            )
        return Checkpoint("timm", tensors, config, path)
    raise ValueError(
        f"{path} is neither a timm VisionTransformer state dict (no "
        "'patch_embed.proj.weight') nor a Hugging Face ViT checkpoint (no "
        "'vit.embeddings.*'); found e.g. " + ", ".join(sorted(tensors)[:5])
    )
