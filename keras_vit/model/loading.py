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

import numpy as np

from keras_vit.model import variants
from keras_vit.model.posemb import infer_grid_shape, resize_position_embedding
from keras_vit.weights import (
    KerasFile,
    assign_tensors,
    checkpoint_config,
    model_variables,
    open_weights,
    to_keras_tensors,
)
from keras_vit.weights.mappings import CLASS_TOKEN, POSEMB

#: Checkpoint facts that become a variant factory's defaults (explicit arguments win).
CHECKPOINT_DEFAULT_KEYS = (
    "image_size",
    "num_classes",
    "representation_size",
    "classifier",
    "layer_norm_epsilon",
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
        entry: optional ``WeightsEntry``: its training resolution wins.

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
    if entry is not None:
        config["image_size"] = (entry.resolution, entry.resolution)
    elif config["image_size"] is None and grid is not None:
        stride = variants.total_stride(config["patch_size"], config["resnet_layers"])
        config["image_size"] = (grid[0] * stride[0], grid[1] * stride[1])
    return config


def fit_position_embedding(
    posemb, model, method, checkpoint_prefix=None, has_class_token=True, source_grid_shape=None
):
    """A stored position embedding, fitted to the model's grid and prefix.

    The class-token entry is kept apart; the grid part is resized with
    ``resize_position_embedding(method=...)`` when its grid differs from the
    model's. A checkpoint without a class-token entry (big_vision) gets a
    zero entry, which is what adding nothing means.

    Args:
        posemb: array ``(1, tokens, hidden)``.
        model: the ``ViT`` (``grid_size``, ``num_prefix_tokens``).
        method: str. Interpolation method.
        checkpoint_prefix: int or None. Class-token entries stored; None
            infers it from the token count.
        has_class_token: bool. The checkpoint has a class token.
        source_grid_shape: optional ``(rows, cols)`` of the stored grid;
            inferred as square when omitted.

    Returns:
        array ``(1, prefix + rows * cols, hidden)``.

    Raises:
        ValueError: for a grid that cannot be inferred or a class-token
            entry the model has no token for.
    """
    posemb = posemb.reshape(1, -1, posemb.shape[-1])
    tokens = posemb.shape[1]
    rows, cols = model.grid_size
    if checkpoint_prefix is None:
        checkpoint_prefix = int(
            has_class_token and tokens - 1 in (rows * cols, _square(tokens - 1))
        )
    target_prefix = model.num_prefix_tokens
    if checkpoint_prefix > target_prefix:
        raise ValueError(
            f"the checkpoint's position embedding {tuple(posemb.shape)} has a "
            "class-token entry, but the model has no class token "
            f"(classifier={model.classifier!r}); use classifier='token'"
        )
    if checkpoint_prefix < target_prefix:
        posemb = np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)
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
    if POSEMB in tensors:
        try:
            tensors[POSEMB] = fit_position_embedding(
                tensors[POSEMB],
                model,
                method,
                checkpoint.posemb_prefix,
                has_class_token=CLASS_TOKEN in tensors,
            )
        except ValueError as err:
            problems.append(f"position embedding {origin[POSEMB]!r}: {err}")
    return assign_tensors(
        model_variables(model),
        tensors,
        origin,
        problems,
        source=f"Checkpoint {checkpoint.path or '(in memory)'} ({checkpoint.format} format)",
        target=model.name,
    )


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
        model.load_weights(source.path)
    else:
        load_checkpoint(model, source, posemb_interpolation)
    return model
