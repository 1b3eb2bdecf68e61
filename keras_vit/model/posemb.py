"""Position embeddings on a patch grid: resizing learned tables, computing fixed sin-cos ones.

One implementation serves checkpoint loading (eager, concrete sizes) and the
exported graph (symbolic sizes, ``--dynamic-resolution``): every method is
written as a pair of separable interpolation matrices built with
``keras.ops`` from the output size, so both paths compute the same numbers.

``sincos_position_embedding`` computes big_vision's fixed 2-D sin-cos table for any
grid instead (recomputed, never interpolated).

Methods (``method=``):

- ``"official"``: ``scipy.ndimage.zoom(grid, zoom, order=1)`` as in the
  official JAX code: bilinear with aligned corners, sample step
  ``(in - 1) / (out - 1)``.
- ``"bilinear"``: half-pixel centres, no antialias
  (``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``):
  what timm applies when it loads an official ``.npz``.
- ``"bicubic"``: half-pixel, antialiased bicubic as in PyTorch
  (``mode="bicubic", antialias=True``): Keys kernel with a = -0.5 and support
  renormalised at the borders (as PIL): timm's default for its checkpoints.
- ``"bicubic_hf"``: half-pixel bicubic with a = -0.75, no antialias, borders
  replicated: Hugging Face's ``interpolate_pos_encoding``.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

POSEMB_INTERPOLATIONS = ("official", "bilinear", "bicubic", "bicubic_hf")


def _check_method(method):
    if method not in POSEMB_INTERPOLATIONS:
        raise ValueError(
            f"Unknown position-embedding interpolation {method!r}; expected one "
            f"of {POSEMB_INTERPOLATIONS}."
        )


def _cubic(x, a):
    """Keys cubic convolution kernel of parameter ``a`` at distances ``x``."""
    x = ops.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return ops.where(x < 1.0, near, ops.where(x < 2.0, far, ops.zeros_like(x)))


def _taps(index, in_size):
    """One-hot rows ``(out, in)`` for integer tap indices clamped to the grid."""
    index = ops.clip(index, 0, in_size - 1)
    return ops.one_hot(ops.cast(index, "int32"), in_size, dtype="float32")


def interpolation_matrix(in_size, out_size, method="official"):
    """Matrix ``W`` of shape ``(out_size, in_size)`` with ``resized = W @ x``.

    Args:
        in_size: int. Length of the source axis (static).
        out_size: int or scalar integer tensor. Length of the target axis;
            may be symbolic inside a traced graph.
        method: str. One of ``POSEMB_INTERPOLATIONS``.

    Returns:
        A float32 tensor of shape ``(out_size, in_size)`` whose rows sum to 1.
    """
    _check_method(method)
    in_size = int(in_size)
    out_f = ops.cast(out_size, "float32")
    i = ops.cast(ops.arange(out_size), "float32")  # (out,)
    if method == "official":
        step = (in_size - 1.0) / ops.maximum(out_f - 1.0, 1.0)
        src = i * step
        x0 = ops.floor(src)
        t = (src - x0)[:, None]
        return _taps(x0, in_size) * (1.0 - t) + _taps(x0 + 1.0, in_size) * t
    scale = in_size / out_f
    if method == "bilinear":
        src = ops.maximum((i + 0.5) * scale - 0.5, 0.0)
        x0 = ops.floor(src)
        t = (src - x0)[:, None]
        return _taps(x0, in_size) * (1.0 - t) + _taps(x0 + 1.0, in_size) * t
    if method == "bicubic_hf":
        src = (i + 0.5) * scale - 0.5
        x0 = ops.floor(src)
        t = (src - x0)[:, None]
        return (
            _taps(x0 - 1.0, in_size) * _cubic(t + 1.0, -0.75)
            + _taps(x0, in_size) * _cubic(t, -0.75)
            + _taps(x0 + 1.0, in_size) * _cubic(1.0 - t, -0.75)
            + _taps(x0 + 2.0, in_size) * _cubic(2.0 - t, -0.75)
        )
    # "bicubic": antialiased; the kernel widens by the scale when shrinking.
    j = ops.cast(ops.arange(in_size), "float32")[None, :]  # (1, in)
    center = (i[:, None] + 0.5) * scale
    inv_scale = 1.0 / ops.maximum(scale, 1.0)
    weights = _cubic((j + 0.5 - center) * inv_scale, -0.5)
    return weights / ops.sum(weights, axis=1, keepdims=True)


def infer_grid_shape(num_grid_tokens):
    """Side of a square grid of ``num_grid_tokens`` tokens, as ``(g, g)``.

    Raises:
        ValueError: if the count is not a perfect square.
    """
    side = math.isqrt(int(num_grid_tokens))
    if side * side != num_grid_tokens:
        raise ValueError(
            f"Cannot infer the patch grid of a position embedding with "
            f"{num_grid_tokens} grid tokens: it is not a square number. Pass "
            "`source_grid_shape=(rows, cols)`."
        )
    return side, side


def resize_position_embedding(
    posemb,
    grid_shape,
    num_prefix_tokens=1,
    method="official",
    source_grid_shape=None,
):
    """Resizes a learned position embedding to a new patch grid.

    The first ``num_prefix_tokens`` entries (the class token's) are kept
    apart and unchanged; the rest is viewed as a ``(rows, cols, hidden)``
    grid and resized separably with ``interpolation_matrix``.

    Args:
        posemb: array or tensor of shape ``(1, tokens, hidden)`` or
            ``(tokens, hidden)``.
        grid_shape: ``(rows, cols)`` of the target grid; ints or scalar
            tensors (symbolic inside a graph).
        num_prefix_tokens: int. Leading tokens not on the grid (1 with a class
            token, 0 for ``classifier="gap"``).
        method: str. One of ``POSEMB_INTERPOLATIONS``.
        source_grid_shape: optional ``(rows, cols)`` of the stored grid;
            inferred as square when omitted.

    Returns:
        A float32 tensor ``(1, num_prefix_tokens + rows * cols, hidden)``
        (or without the leading 1 when the input had none). NumPy input gives
        a NumPy array.
    """
    _check_method(method)
    as_numpy = isinstance(posemb, np.ndarray)
    squeeze = len(posemb.shape) == 2
    x = ops.convert_to_tensor(posemb, dtype="float32")
    if squeeze:
        x = x[None]
    num_tokens, hidden = int(x.shape[1]), int(x.shape[2])
    if num_prefix_tokens > num_tokens:
        raise ValueError(
            f"num_prefix_tokens={num_prefix_tokens} exceeds the {num_tokens} "
            "tokens of the position embedding."
        )
    if source_grid_shape is None:
        source_grid_shape = infer_grid_shape(num_tokens - num_prefix_tokens)
    rows, cols = (int(s) for s in source_grid_shape)
    if rows * cols != num_tokens - num_prefix_tokens:
        raise ValueError(
            f"source_grid_shape={source_grid_shape} has {rows * cols} cells, "
            f"but the position embedding has {num_tokens - num_prefix_tokens} "
            "grid tokens."
        )
    prefix = x[:, :num_prefix_tokens]
    grid = ops.reshape(x[0, num_prefix_tokens:], (rows, cols, hidden))
    w_rows = interpolation_matrix(rows, grid_shape[0], method)
    w_cols = interpolation_matrix(cols, grid_shape[1], method)
    resized = ops.einsum("hi,ijd,wj->hwd", w_rows, grid, w_cols)
    resized = ops.reshape(resized, (1, -1, hidden))
    out = ops.concatenate([prefix, resized], axis=1)
    if squeeze:
        out = out[0]
    return ops.convert_to_numpy(out) if as_numpy else out


def sincos_position_embedding(grid_shape, width, temperature=10_000.0):
    """Fixed 2-D sin-cos position embeddings of a patch grid (big_vision ``posemb_sincos_2d``).

    For the patch at row ``y`` and column ``x`` (row-major order) and
    frequencies ``omega_k = temperature ** -(k / (width / 4 - 1))``,
    ``k = 0 .. width / 4 - 1``, the embedding is
    ``[sin(x omega), cos(x omega), sin(y omega), cos(y omega)]``.

    Args:
        grid_shape: ``(rows, cols)``; ints or scalar tensors (symbolic
            inside a graph, e.g. under ``dynamic_resolution``).
        width: int. Embedding width, divisible by 4 (and at least 8).
        temperature: float. Frequency base.

    Returns:
        float32 tensor ``(1, rows * cols, width)``.

    Raises:
        ValueError: for a width that is not a multiple of 4 (or below 8).
    """
    if width % 4 or width < 8:
        raise ValueError(
            f"sin-cos position embeddings need a width divisible by 4 (>= 8), got {width}."
        )
    quarter = width // 4
    omega = 1.0 / temperature ** (ops.cast(ops.arange(quarter), "float32") / (quarter - 1))
    rows, cols = grid_shape
    y = ops.repeat(ops.cast(ops.arange(rows), "float32"), cols)
    x = ops.tile(ops.cast(ops.arange(cols), "float32"), [rows])
    x, y = x[:, None] * omega[None, :], y[:, None] * omega[None, :]
    table = ops.concatenate([ops.sin(x), ops.cos(x), ops.sin(y), ops.cos(y)], axis=1)
    return table[None]
