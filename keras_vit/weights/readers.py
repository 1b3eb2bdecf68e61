"""Reading checkpoint files into NumPy without executing code.

``read_checkpoint(path)`` returns a ``Checkpoint``: the raw tensors by their
stored names, the detected format (``"official"`` for the vit_jax, AugReg
and big_vision ``.npz`` layouts, ``"timm"`` or ``"hf"``) and the checkpoint's
own ``config.json`` if it has one. ``.npz`` files are read with
``numpy.load(allow_pickle=False)``, ``.safetensors`` with
``safetensors.numpy``; nothing here imports torch or unpickles.

Before any array of an ``.npz`` is inflated, every member's header is read
and checked against what the zip member holds: a header that claims more
bytes than its member, or a member that would inflate more than
``MAX_INFLATION`` times to over ``INFLATION_FLOOR`` bytes, is refused, so a
small file cannot make the reader allocate gigabytes.

big_vision files are normalised to the vit_jax names the ``official``
mapping table uses: the ``params/`` and ``opt/target/`` prefixes are
dropped, a two-tower file keeps its ``img/`` tower (the other keys are
listed in ``Checkpoint.ignored``), scanned blocks (one
``Transformer/encoderblock/...`` tensor with a leading layer axis) are
split into ``encoderblock_{i}``, linen module names become the pre-linen
ones, and a top-level ``pos_embedding`` (added before the class token is
prepended) becomes the grid-only position embedding.
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

#: A member may inflate at most this many times its compressed size ...
MAX_INFLATION = 100
#: ... unless it stays below this many bytes (zero-initialised heads compress well).
INFLATION_FLOOR = 256 * 2**20

_HF_WEIGHTS = "model.safetensors"
_SCANNED_BLOCK = "Transformer/encoderblock/"
#: Sidecar with the numerics of an ``.npz`` written from another format.
NUMERICS_SUFFIX = ".keras_vit.json"
NUMERICS_KEYS = ("layer_norm_epsilon", "semantics", "posemb_interpolation")


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
        layout: str. ``"vit_jax"``, ``"big_vision"``, ``"timm"`` or ``"hf"``.
        ignored: tuple of str. Stored names that are not the image model
            (the text tower of a two-tower file).
        numerics: dict. ``ViT`` numerics stated by the file's sidecar
            (``layer_norm_epsilon``, ``semantics``, ``posemb_interpolation``).
    """

    format: str
    tensors: dict
    config: dict = field(default_factory=dict)
    path: str = ""
    posemb_prefix: int | None = None
    layout: str = ""
    ignored: tuple = ()
    numerics: dict = field(default_factory=dict)


def read_checkpoint(path):
    """Reads an official / big_vision ``.npz``, a timm or HF ``.safetensors``, or a folder.

    A folder must hold ``model.safetensors`` (Hugging Face or timm hub
    layout, with ``config.json``) or exactly one ``.npz``/``.safetensors``.

    Args:
        path: str or path-like.

    Returns:
        A ``Checkpoint``.

    Raises:
        FileNotFoundError: if nothing is there.
        ValueError: for a corrupt, truncated, oversized or pickled file, a
            tensor that is not a finite real array, or a layout that is none
            of the supported formats.
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
        checkpoint = _official_checkpoint(_read_npz(path), path)
        checkpoint.numerics = _read_numerics(path + NUMERICS_SUFFIX)
    elif path.endswith(".safetensors"):
        checkpoint = _torch_checkpoint(_read_safetensors(path), config, path)
    else:
        raise ValueError(
            f"Unsupported checkpoint {path!r}: expected an official .npz, a timm or "
            "Hugging Face .safetensors file (or its folder), a .weights.h5 or a "
            ".keras file."
        )
    _check_arrays(checkpoint)
    return checkpoint


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


def _read_json(path, expect=dict):
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"Cannot read checkpoint config {path}: {err}") from None
    if not isinstance(content, expect):
        raise ValueError(
            f"Checkpoint config {path} must be a JSON object, got {type(content).__name__}."
        )
    return content


def _read_numerics(path):
    """The sidecar numerics of an ``.npz`` (``{}`` without a sidecar)."""
    if not os.path.exists(path):
        return {}
    numerics = _read_json(path)
    unknown = sorted(set(numerics) - set(NUMERICS_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; expected some of {NUMERICS_KEYS}.")
    return numerics


def _check_members(archive, path):
    """Refuses members whose header claims more than they hold, or that inflate too far."""
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            continue
        ratio_ok = info.file_size <= MAX_INFLATION * max(info.compress_size, 1)
        if info.file_size > INFLATION_FLOOR and not ratio_ok:
            raise ValueError(
                f"Checkpoint {path}: member {info.filename!r} would inflate from "
                f"{info.compress_size:,} to {info.file_size:,} bytes (more than "
                f"{MAX_INFLATION}x and {INFLATION_FLOOR // 2**20} MiB); refusing to read it."
            )
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            header = member.tell()
        claimed = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)
        if dtype.hasobject:
            continue  # refused by numpy.load(allow_pickle=False) with its own message
        if claimed + header > info.file_size:
            raise ValueError(
                f"Checkpoint {path}: member {info.filename!r} claims an array of shape "
                f"{shape} ({claimed:,} bytes) but holds {info.file_size - header:,} bytes; "
                "the file is corrupt or crafted."
            )


def _read_npz(path):
    """All arrays of an ``.npz``, read eagerly so corruption shows up here."""
    try:
        with zipfile.ZipFile(path) as archive:
            _check_members(archive, path)
        with np.load(path, allow_pickle=False) as data:
            return {name: np.asarray(data[name]) for name in data.files}
    except ValueError as err:
        if "allow_pickle" in str(err) or "pickle" in str(err).lower():
            raise ValueError(
                f"Checkpoint {path} holds pickled Python objects; keras-vit only "
                "reads plain arrays (numpy.load(allow_pickle=False)) and will "
                "not execute code from a file."
            ) from None
        if str(err).startswith(f"Checkpoint {path}"):
            raise
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


def _check_arrays(checkpoint):
    """Every tensor a finite, real floating-point array (checked before any is used)."""
    bad = []
    for name, array in checkpoint.tensors.items():
        if not np.issubdtype(array.dtype, np.floating):
            bad.append(f"{name!r} has dtype {array.dtype} (expected floating point)")
        elif not np.all(np.isfinite(array)):
            bad.append(f"{name!r} holds NaN or infinite values")
    if bad:
        raise ValueError(
            f"Checkpoint {checkpoint.path} has tensors keras-vit cannot load as weights: "
            + "; ".join(bad[:10])
            + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
            + "."
        )


def _strip_prefixes(tensors):
    """big_vision's ``opt/target/`` and ``params/`` prefixes dropped; ``img/`` tower kept."""
    for prefix in ("opt/target/", "params/"):
        if any(name.startswith(prefix) for name in tensors):
            tensors = {
                n.removeprefix(prefix): v for n, v in tensors.items() if n.startswith(prefix)
            }
    ignored = ()
    if any(name.startswith("img/") for name in tensors):
        ignored = tuple(sorted(name for name in tensors if not name.startswith("img/")))
        tensors = {n.removeprefix("img/"): v for n, v in tensors.items() if n.startswith("img/")}
    return tensors, ignored


def _unscan(tensors, path):
    """Scanned blocks (leading layer axis) split into ``Transformer/encoderblock_{i}``."""
    scanned = {n: v for n, v in tensors.items() if n.startswith(_SCANNED_BLOCK)}
    if not scanned:
        return tensors
    depths = {v.shape[0] if v.ndim else 0 for v in scanned.values()}
    if len(depths) != 1 or 0 in depths:
        raise ValueError(
            f"Checkpoint {path}: the scanned blocks {_SCANNED_BLOCK}* disagree on the "
            f"number of layers (leading axes {sorted(depths)})."
        )
    tensors = {n: v for n, v in tensors.items() if n not in scanned}
    for name, stacked in scanned.items():
        rest = name.removeprefix(_SCANNED_BLOCK)
        for i, layer in enumerate(stacked):
            tensors[f"Transformer/encoderblock_{i}/{rest}"] = np.ascontiguousarray(layer)
    return tensors


def _official_checkpoint(tensors, path):
    """Normalises vit_jax, AugReg and big_vision layouts to vit_jax names."""
    raw_names = set(tensors)
    tensors, ignored = _strip_prefixes(tensors)
    tensors = _unscan(tensors, path)
    posemb_prefix = None
    layout = "vit_jax"
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
    if ignored or posemb_prefix == 0 or any("MlpBlock_0" in n for n in raw_names):
        layout = "big_vision"
    if layout == "big_vision" and "Transformer/posembed_input/pos_embedding" not in renamed:
        posemb_prefix = 0  # no table: big_vision's fixed sin-cos embeddings
    return Checkpoint("official", renamed, {}, path, posemb_prefix, layout, ignored)


def _torch_checkpoint(tensors, config, path):
    """timm or Hugging Face, told apart by their tensor names."""
    if any(name.startswith(("vit.", "embeddings.")) for name in tensors):
        if any(name.startswith("embeddings.") for name in tensors):  # ViTModel
            tensors = {
                (name if name.startswith("vit.") else f"vit.{name}"): value
                for name, value in tensors.items()
            }
        _check_hf_config(config, path)
        return Checkpoint("hf", tensors, config, path, layout="hf")
    if "patch_embed.proj.weight" in tensors:
        return Checkpoint("timm", tensors, config, path, layout="timm")
    raise ValueError(
        f"{path} is neither a timm VisionTransformer state dict (no "
        "'patch_embed.proj.weight') nor a Hugging Face ViT checkpoint (no "
        "'vit.embeddings.*'); found e.g. " + ", ".join(sorted(tensors)[:5])
    )


# Hugging Face ``hidden_act`` values keras-vit computes: exact or tanh GELU.
HF_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh")


def _check_hf_config(config, path):
    """A Hugging Face ``config.json`` of a ViT, with values in range."""
    if not config:
        return
    where = f"Hugging Face config of {path}"
    model_type = config.get("model_type", "vit")
    if model_type != "vit":
        raise ValueError(f"{where}: model_type must be 'vit', got {model_type!r}.")
    act = config.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise ValueError(f"{where}: hidden_act must be one of {HF_ACTIVATIONS}, got {act!r}.")
    checks = {
        "num_attention_heads": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "layer_norm_eps": lambda v: (
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
        ),
        "image_size": lambda v: _positive_size(v),
    }
    for key, valid in checks.items():
        if key in config and not valid(config[key]):
            raise ValueError(f"{where}: {key} must be positive, got {config[key]!r}.")


def _positive_size(value):
    values = [value] if isinstance(value, int) else value
    return (
        isinstance(values, (list, tuple))
        and len(values) in (1, 2)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)
    )
