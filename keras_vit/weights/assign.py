"""Checkpoint tensors -> the variables of a built ``ViT``, all or nothing.

``to_keras_tensors`` renames and re-lays-out a checkpoint with its format's
mapping table; ``assign_checkpoint`` fits it to a model (head handling,
position-embedding resize), validates every tensor and only then assigns.
"""

from __future__ import annotations

import warnings

import numpy as np

from keras_vit.model.posemb import infer_grid_shape, resize_position_embedding
from keras_vit.weights.mappings import TOP_LAYERS, source_to_keras, to_keras_layout

POSEMB = "posembed_input/pos_embedding"
CLASS_TOKEN = "cls/cls"


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model: lists every offending tensor."""


def model_variables(model):
    """``{path relative to the model: variable}`` of a built ``ViT``."""
    prefix = f"{model.name}/"
    return {v.path[len(prefix):]: v for v in model.weights if v.path.startswith(prefix)}


def to_keras_tensors(checkpoint, num_heads):
    """Renames a checkpoint's tensors to Keras paths in Keras layout.

    Args:
        checkpoint: a ``keras_vit.weights.readers.Checkpoint``.
        num_heads: int. Attention heads (to split fused head axes).

    Returns:
        ``(tensors, origin, problems)``: ``{keras path: array}``,
        ``{keras path: source name}`` and a list of messages for source
        tensors that match no rule or cannot be re-laid-out.
    """
    resolve = source_to_keras(checkpoint.format)
    tensors, origin, problems = {}, {}, []
    for name, array in checkpoint.tensors.items():
        targets = resolve(name)
        if not targets:
            problems.append(f"unexpected tensor {name!r} {tuple(array.shape)}")
            continue
        for path, rule in targets:
            try:
                tensors[path] = np.asarray(to_keras_layout(array, rule, num_heads))
            except ValueError as err:
                problems.append(
                    f"mis-shaped tensor {name!r}: shape {tuple(array.shape)} "
                    f"cannot be read as {path!r} ({err})"
                )
                continue
            origin[path] = name
    return tensors, origin, problems


def fit_position_embedding(posemb, model, method, checkpoint_prefix=None, has_class_token=True):
    """The stored position embedding, fitted to the model's grid and prefix.

    The class-token entry is kept apart; the grid part is resized with
    ``resize_position_embedding(method=...)`` when the number of grid tokens
    differs from the model's. A checkpoint without a class-token entry
    (big_vision) gets a zero entry, which is what adding nothing means.

    Args:
        posemb: array ``(1, tokens, hidden)``.
        model: the ``ViT`` (``grid_size``, ``num_prefix_tokens``).
        method: str. Interpolation method.
        checkpoint_prefix: int or None. Class-token entries stored; None
            infers it from the token count.
        has_class_token: bool. The checkpoint has a class token.

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
    if grid_tokens == rows * cols:
        return posemb
    source_grid = infer_grid_shape(grid_tokens)
    return resize_position_embedding(
        posemb.astype(np.float32),
        (rows, cols),
        num_prefix_tokens=target_prefix,
        method=method,
        source_grid_shape=source_grid,
    )


def _square(n):
    side = int(round(n ** 0.5)) if n > 0 else -1
    return n if side * side == n else -1


def assign_checkpoint(model, checkpoint, posemb_interpolation=None):
    """Loads a checkpoint into a built ``ViT``: validate everything, then assign.

    Head handling: a head (or ``pre_logits``) whose shape differs from the
    checkpoint's is left initialised with a warning; a model without a head
    (``include_top=False``) or without ``pre_logits``
    (``representation_size=None``) ignores the checkpoint's. The head is
    not loaded when the checkpoint's ``pre_logits`` is dropped (its inputs
    would differ). Every other tensor must match exactly.

    Args:
        model: a built ``keras_vit.ViT``.
        checkpoint: a ``Checkpoint`` from ``read_checkpoint``.
        posemb_interpolation: str or None. Resize method for the position
            embedding; None uses the model's ``posemb_interpolation``.

    Returns:
        dict ``{keras path: source name}`` of the assigned variables.

    Raises:
        CheckpointMismatchError: (a ``ValueError``) listing every missing,
            unexpected or mis-shaped tensor with both shapes; no variable is
            changed then.
    """
    method = posemb_interpolation or model.posemb_interpolation
    variables = model_variables(model)
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
    skipped_top = _top_layers_to_skip(variables, tensors, origin)
    values = {}
    for path, variable in variables.items():
        layer = path.split("/")[0]
        if layer in skipped_top:
            continue
        if path not in tensors:
            problems.append(f"missing tensor for {path!r} {tuple(variable.shape)}")
            continue
        value = tensors[path]
        if tuple(value.shape) != tuple(variable.shape):
            problems.append(
                f"mis-shaped tensor {origin[path]!r}: checkpoint shape "
                f"{tuple(value.shape)}, model variable {path!r} expects "
                f"{tuple(variable.shape)}"
            )
            continue
        values[path] = value
    for path in sorted(set(tensors) - set(variables)):
        if path.split("/")[0] not in TOP_LAYERS:
            problems.append(
                f"unexpected tensor {origin[path]!r} {tuple(tensors[path].shape)} "
                f"(would be {path!r}; the model has no such variable)"
            )
    if problems:
        raise CheckpointMismatchError(
            f"Checkpoint {checkpoint.path or '(in memory)'} ({checkpoint.format} "
            f"format) does not fit model {model.name!r}:\n  - "
            + "\n  - ".join(problems)
        )
    for path, value in values.items():
        variables[path].assign(value.astype(variables[path].dtype))
    return {path: origin[path] for path in values}


def _top_layers_to_skip(variables, tensors, origin):
    """Top layers (``pre_logits``, ``head``) left initialised, with warnings."""
    skipped = set()
    model_has = {layer: any(p.startswith(layer + "/") for p in variables) for layer in TOP_LAYERS}
    ckpt_has = {layer: any(p.startswith(layer + "/") for p in tensors) for layer in TOP_LAYERS}
    if ckpt_has["pre_logits"] and not model_has["pre_logits"]:
        message = "the checkpoint's pre_logits (representation) layer is dropped (representation_size=None)"
        if model_has["head"] and ckpt_has["head"]:
            skipped.add("head")
            message += "; its head, trained on those features, is not loaded either"
        warnings.warn(message + ".", stacklevel=4)
    for layer in TOP_LAYERS:
        if not model_has[layer] or layer in skipped:
            continue
        if not ckpt_has[layer]:
            warnings.warn(
                f"The checkpoint has no {layer!r} layer; the model's is left "
                "initialised.",
                stacklevel=4,
            )
            skipped.add(layer)
            continue
        mismatched = [
            f"{origin[p]!r} {tuple(tensors[p].shape)} vs model {tuple(v.shape)}"
            for p, v in variables.items()
            if p.startswith(layer + "/")
            and (p not in tensors or tuple(tensors[p].shape) != tuple(v.shape))
        ]
        if mismatched:
            classes = ""
            if layer == "head" and "head/bias" in tensors:
                classes = (
                    f" (checkpoint: {tensors['head/bias'].shape[0]} classes, "
                    f"model: {variables['head/bias'].shape[0]})"
                )
            warnings.warn(
                f"Not loading the checkpoint's {layer!r} layer, whose shape "
                f"differs from the model's{classes}: {'; '.join(mismatched)}. "
                f"The model's {layer!r} is left initialised.",
                stacklevel=4,
            )
            skipped.add(layer)
    return skipped
