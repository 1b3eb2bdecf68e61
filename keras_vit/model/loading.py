"""Where checkpoints meet models: architecture from a file, tensors fitted to a model.

``keras_vit.weights`` reads files and knows nothing of models; this module
adds the model's side:

- ``checkpoint_architecture``: the ``ViT`` arguments a checkpoint describes,
  with the family rules for what a file does not state (the number of
  heads, the image size of a position-embedding grid);
- ``fit_position_embedding``: a stored position embedding fitted to a
  model's grid and prefix tokens (also used by ``ViT.inference_copy``);
- ``load_weights``: any weights into a built ``ViT``, all or nothing.
"""

from __future__ import annotations

import warnings

import numpy as np

from keras_vit.messages import KerasVitWarning
from keras_vit.model import variants
from keras_vit.model.posemb import infer_grid_shape, resize_position_embedding
from keras_vit.weights import (
    Checkpoint,
    KerasFile,
    assign_tensors,
    checkpoint_config,
    model_variables,
    open_weights,
    registry_entry,
    to_keras_tensors,
)
from keras_vit.weights.mappings import POSEMB

#: Checkpoint facts about the architecture that become a variant factory's
#: defaults (explicit arguments win; the depth and widths come from the table).
ARCHITECTURE_DEFAULT_KEYS = (
    "input_mean",
    "input_std",
    "representation_size",
    "classifier",
    "class_token",
    "distillation_token",
    "num_register_tokens",
    "posemb",
    "layer_scale_init",
    "fc_norm",
    "layer_norm_epsilon",
)
#: ... and with them the size, head and numerics (``ViT.from_variant`` arguments).
CHECKPOINT_DEFAULT_KEYS = (
    *ARCHITECTURE_DEFAULT_KEYS,
    "image_size",
    "num_classes",
    "include_top",
    "semantics",
    "posemb_interpolation",
)


def checkpoint_architecture(checkpoint, num_heads=None, entry=None):
    """``ViT`` keyword arguments that rebuild a checkpoint's model.

    Args:
        checkpoint: a ``keras_vit.weights.Checkpoint``.
        num_heads: int or None. Heads, when the file does not state them;
            otherwise the standard ViT size of that width
            (``variants.standard_num_heads``).
        entry: optional ``WeightsEntry``: its training resolution, classes (0:
            no head) and representation size win.

    Returns:
        dict of ``ViT`` arguments; ``image_size`` is None when the file
        neither states it nor has a square position-embedding grid.

    Raises:
        ValueError: if the heads cannot be told (the message names
            ``num_heads``).
    """
    config = checkpoint_config(checkpoint)
    grid = config.pop("grid_size")
    hidden = config["hidden_size"]
    config["num_heads"] = int(
        num_heads or config["num_heads"] or variants.standard_num_heads(hidden, checkpoint.path)
    )
    if entry is not None:  # the registry knows what the file does not say (zeroed heads)
        config["image_size"] = (entry.resolution, entry.resolution)
        config["include_top"] = bool(entry.num_classes)
        config["num_classes"] = entry.num_classes or None
        config["representation_size"] = entry.representation_size
    elif config["image_size"] is None and grid is not None:
        stride = variants.total_stride(config["patch_size"], config["resnet_layers"])
        config["image_size"] = (grid[0] * stride[0], grid[1] * stride[1])
    return config


def variant_defaults(weights, variant, num_heads):
    """Reads ``weights`` for ``ViT.from_variant(variant)``: the source and the defaults it implies.

    A registry entry is checked against the variant before anything is
    downloaded; its ``options`` (the ViT arguments of its family) win over
    what the file's tensors tell, since they also hold what no tensor shows
    (the GELU the weights were trained with).

    Args:
        weights: a path, folder, registry name, URL, ``Checkpoint`` or ``KerasFile``.
        variant: str. The variant being built.
        num_heads: int. The variant's heads.

    Returns:
        ``(source, defaults)``: a ``Checkpoint`` or ``KerasFile``, and a dict of
        ``CHECKPOINT_DEFAULT_KEYS`` (empty for Keras files).

    Raises:
        ValueError: for a registry entry of another variant.
    """
    entry = registry_entry(weights)
    if entry is not None and entry.variant != variant:  # before any download
        raise ValueError(
            f"Weights {weights!r} are for ViT-{entry.variant}, not ViT-{variant}; "
            f"use keras_vit.{variants.factory_name(entry.variant)}(weights={weights!r})."
        )
    source, entry = open_weights(weights)
    if not isinstance(source, Checkpoint):
        return source, {}
    architecture = checkpoint_architecture(source, num_heads, entry)
    defaults = {key: architecture[key] for key in CHECKPOINT_DEFAULT_KEYS if key in architecture}
    defaults.update(getattr(entry, "options", None) or {})
    defaults.update(_entry_normalisation(entry))
    return source, defaults


#: ``x / 127.5 - 1`` as a ``(mean, std)`` on [0, 1] pixels: keras-vit's own convention.
_UNIT_RANGE = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _entry_normalisation(entry):
    """``input_mean`` / ``input_std`` of a registry entry trained on another normalisation."""
    mean, std = getattr(entry, "mean", None), getattr(entry, "std", None)
    if mean is None or (tuple(mean), tuple(std)) == _UNIT_RANGE:
        return {}
    return {"input_mean": tuple(mean), "input_std": tuple(std)}


def fit_position_embedding(
    posemb, model, method, checkpoint_prefix=None, source_grid_shape=None, prefix_tokens=1
):
    """A stored position embedding, fitted to the model's table: prefix entries and grid.

    The model's table (``model.position_embedding``) has an entry for each
    prefix token with ``posemb="learn"`` and none with ``"learn_grid"``. The
    stored prefix entries are kept apart; a table stored without them
    (big_vision) gets zero entries, which is what adding nothing means; the
    grid part is resized with ``resize_position_embedding(method=...)`` when
    its grid differs from the model's.

    Args:
        posemb: array ``(1, tokens, hidden)``.
        model: the ``ViT`` (``grid_size``, ``position_embedding``).
        method: str. Interpolation method.
        checkpoint_prefix: int or None. Prefix entries stored; None infers
            it from the token count: ``prefix_tokens`` entries when the rest
            is the model's grid or a square one, else none.
        source_grid_shape: optional ``(rows, cols)`` of the stored grid;
            inferred as square when omitted.
        prefix_tokens: int. Prefix tokens of the checkpoint's model.

    Returns:
        array ``(1, prefix + rows * cols, hidden)``.

    Raises:
        ValueError: for a grid that cannot be inferred, or prefix entries the
            model has no tokens for.
    """
    posemb = posemb.reshape(1, -1, posemb.shape[-1])
    tokens = posemb.shape[1]
    rows, cols = model.grid_size
    target_prefix = model.position_embedding.num_prefix_tokens
    if checkpoint_prefix is None:
        fits = tokens - prefix_tokens in (rows * cols, _square(tokens - prefix_tokens))
        checkpoint_prefix = prefix_tokens if prefix_tokens and fits else 0
    if checkpoint_prefix > target_prefix:
        if not model.class_token_enabled:
            raise ValueError(
                f"the checkpoint's position embedding {tuple(posemb.shape)} has a "
                "class-token entry, but the model has no class token "
                f"(classifier={model.classifier!r}); use classifier='token'"
            )
        raise ValueError(
            f"the checkpoint's position embedding {tuple(posemb.shape)} has {checkpoint_prefix} "
            f"prefix entries, but the model's table has {target_prefix} "
            f"(posemb={model.posemb!r}); build the model with posemb='learn'"
        )
    if checkpoint_prefix < target_prefix:
        zeros = np.zeros((1, target_prefix - checkpoint_prefix, posemb.shape[-1]), posemb.dtype)
        posemb = np.concatenate([zeros, posemb], axis=1)
    grid_tokens = tokens - checkpoint_prefix
    if source_grid_shape is None:
        if grid_tokens == rows * cols:
            return posemb
        source_grid_shape = infer_grid_shape(grid_tokens)
    source_grid = tuple(source_grid_shape)
    if source_grid == (rows, cols):
        return posemb
    return resize_position_embedding(
        posemb.astype(np.float32),
        (rows, cols),
        num_prefix_tokens=target_prefix,
        method=method,
        source_grid_shape=source_grid,
    )


def _architecture_difference(checkpoint, model):
    """One sentence on how the checkpoint's architecture differs from the model's, or None."""
    try:
        facts = checkpoint_config(checkpoint)
    except ValueError:
        return None
    keys = ("hidden_size", "num_layers", "patch_size", "mlp_dim", "num_prefix_tokens")
    facts["num_prefix_tokens"] = (
        int(facts["class_token"]) + int(facts["distillation_token"]) + facts["num_register_tokens"]
    )
    facts["patch_size"] = tuple(facts["patch_size"])
    ours = {key: getattr(model, key) for key in keys}
    if all(facts[key] == ours[key] for key in keys):
        return None

    def describe(config):
        rows, cols = config["patch_size"]
        return (
            f"hidden {config['hidden_size']}, {config['num_layers']} layers, patch "
            f"{rows}x{cols}, MLP {config['mlp_dim']}, {config['num_prefix_tokens']} prefix token(s)"
        )

    return (
        f"the checkpoint is {describe(facts)}; the model is {describe(ours)}. Build the model "
        "the checkpoint describes with keras_vit.model_from_checkpoint(path) (or the matching "
        "factory with the checkpoint's options)."
    )


def _prefix_tokens(tensors):
    """Prefix tokens (class, distillation, registers) of a checkpoint's model."""
    count = sum(name in tensors for name in ("cls/cls", "dist_token/tokens"))
    if "reg_token/tokens" in tensors:
        count += tensors["reg_token/tokens"].shape[1]
    return count


def _square(n):
    side = int(round(n**0.5)) if n > 0 else -1
    return n if side * side == n else -1


def load_checkpoint(model, checkpoint, posemb_interpolation=None):
    """Loads a ``Checkpoint`` into a built ``ViT``: fit, validate everything, then assign.

    Args:
        model: a built ``keras_vit.ViT``.
        checkpoint: a ``keras_vit.weights.Checkpoint``.
        posemb_interpolation: str or None. Resize method of the position
            embedding; None uses the model's ``posemb_interpolation``.

    Returns:
        dict ``{keras path: checkpoint name}`` of the assigned variables.

    Raises:
        CheckpointMismatchError: (a ``ValueError``) listing every missing,
            unexpected or mis-shaped tensor; no variable is changed then.
    """
    method = posemb_interpolation or model.posemb_interpolation
    tensors, origin, problems = to_keras_tensors(checkpoint, model.num_heads)
    if POSEMB in tensors and model.position_embedding is not None and model.posemb != "sincos2d":
        try:
            tensors[POSEMB] = fit_position_embedding(
                tensors[POSEMB],
                model,
                method,
                checkpoint.posemb_prefix,
                prefix_tokens=_prefix_tokens(tensors),
            )
        except ValueError as err:
            problems.append(f"position embedding {origin[POSEMB]!r}: {err}")
    assigned = assign_tensors(
        model_variables(model),
        tensors,
        origin,
        problems,
        source=f"Checkpoint {checkpoint.path or '(in memory)'} ({checkpoint.format} format)",
        target=model.name,
        lead=lambda: _architecture_difference(checkpoint, model),
    )
    if checkpoint.ignored:
        shown = sorted(
            {name.split("/")[0] + ("/..." if "/" in name else "") for name in checkpoint.ignored}
        )
        warnings.warn(
            f"{checkpoint.path}: loaded the image tower; ignored {len(checkpoint.ignored)} "
            f"tensors that are not the image tower: {', '.join(shown)}.",
            KerasVitWarning,
            stacklevel=3,
        )
    return assigned


def load_weights(model, weights, posemb_interpolation=None):
    """Loads ``weights`` into a built ``ViT``.

    Args:
        model: a built ``keras_vit.ViT``.
        weights: a ``.weights.h5`` / ``.keras`` file, an official ``.npz``
            (vit_jax, AugReg or big_vision layout), a timm or Hugging Face
            ``.safetensors`` file or folder, a ``REGISTRY`` name, a URL, or a
            ``Checkpoint`` / ``KerasFile``.
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
    source, _ = open_weights(weights)
    if isinstance(source, KerasFile):
        try:
            model.load_weights(source.path)
        except ValueError as err:
            raise ValueError(
                f"{source.path} does not fit the model {model.name!r} ({err}). A .keras file "
                "holds its own architecture: load it with keras_vit.model_from_checkpoint(path) "
                "(keras-vit convert without --variant)."
            ) from None
    else:
        load_checkpoint(model, source, posemb_interpolation)
    return model
