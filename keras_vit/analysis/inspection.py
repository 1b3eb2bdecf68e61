"""Looking inside a ViT: the paper's Figure 6 and Figure 7 as numbers and PNGs.

Named ``inspection`` rather than ``inspect``: a module ``keras_vit/inspect.py``
shadows the standard library's ``inspect`` whenever a script inside the
package folder is run directly (``python keras_vit/cli.py``), which breaks
TensorFlow's import.

Numbers (NumPy, usable on any attention or weights, e.g. constructed ones):

- ``attention_rollout``: Abnar & Zuidema's rollout (paper, Appendix D.8),
  one heat map ``(batch, rows, cols)`` over the patch grid per image;
- ``mean_attention_distance``: attention-weighted distance in pixels per
  image, layer and head ``(batch, layers, heads)`` (Figure 7, right);
- ``position_embedding_similarity``: cosine similarity of every patch's
  position embedding with all others ``(rows, cols, rows, cols)``
  (Figure 7, centre);
- ``embedding_filter_components``: principal components of the
  patch-embedding filters ``(k, kh, kw, channels)`` (Figure 7, left).

Model helpers: ``model_attentions`` (runs ``ViT.forward_intermediates``),
``grid_shape_of``, ``position_embedding_of``, ``embedding_filters_of``.
The figures of these numbers are drawn by ``keras_vit.analysis.plots``.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_vit.model.posemb import sincos_position_embedding

#: Number of principal components shown by default (as in the paper).
NUM_FILTER_COMPONENTS = 28


def grid_shape_of(model, image_shape):
    """Patch grid ``(rows, cols)`` of a ``ViT`` for images of ``image_shape``.

    Args:
        model: a built ``keras_vit.ViT``.
        image_shape: ``(batch, height, width, channels)``.

    Returns:
        ``(height // stride_h, width // stride_w)`` with the model's total
        stride (patch size, times the ResNet stem stride for hybrids).

    Raises:
        ValueError: if the size is not a multiple of the stride.
    """
    height, width = image_shape[1], image_shape[2]
    rows, cols = model.stride
    if height % rows or width % cols:
        raise ValueError(
            f"Image size {height}x{width} is not a multiple of the model's "
            f"total stride {rows}x{cols}."
        )
    return height // rows, width // cols


def model_attentions(model, images):
    """Every block's attention weights of a ``ViT`` on ``images``.

    Args:
        model: a built ``keras_vit.ViT`` (plain or hybrid, any classifier).
        images: array ``(batch, height, width, channels)`` in [-1, 1], at
            the model's size (or any multiple of the stride with
            ``dynamic_resolution=True``).

    Returns:
        ``(attentions, grid_shape)``: a list of ``num_layers`` float32 arrays
        ``(batch, heads, tokens, tokens)`` (rows: queries, softmax over the
        keys) and the patch grid ``(rows, cols)``.
    """
    images = np.asarray(images, dtype="float32")
    grid_shape = grid_shape_of(model, images.shape)
    out = model.forward_intermediates(images, return_attention=True)
    attentions = [
        ops.convert_to_numpy(out[f"attention_{i}"]).astype("float32")
        for i in range(model.num_layers)
    ]
    return attentions, grid_shape


def checked_array(value, layout):
    """float64 array whose rank matches ``layout`` (``"name (a, b)"``), else ValueError."""
    array = np.asarray(value, dtype="float64")
    if array.ndim != layout.count(",") + 1:
        raise ValueError(f"Expected {layout}; got shape {array.shape}.")
    return array


def _check_attention(attention, grid_shape, num_prefix_tokens):
    attention = np.asarray(attention, dtype="float64")
    tokens = num_prefix_tokens + grid_shape[0] * grid_shape[1]
    if attention.ndim != 4 or attention.shape[2:] != (tokens, tokens):
        raise ValueError(
            "Expected attention weights (batch, heads, tokens, tokens) with "
            f"tokens = {num_prefix_tokens} prefix + {grid_shape[0]}x"
            f"{grid_shape[1]} patches = {tokens}; got shape {attention.shape}."
        )
    return attention


def attention_rollout(attentions, grid_shape, num_prefix_tokens=1, output_tokens=None):
    """Attention rollout (Abnar & Zuidema, 2020; paper Appendix D.8).

    Per layer the heads are averaged, the identity is added for the
    residual connection and the rows are renormalised to sum to 1; the
    layers are then multiplied, first layer rightmost. The rows of the
    tokens the head reads give the map (``output_tokens``): the class
    token's row (with DeiT's distillation token, the mean of both rows);
    for a model that pools the patch tokens (``gap``, MAP, ``fc_norm``) the
    mean of the patch rows, since its output is made of all of them.
    Register tokens are never an output. Only the columns of the patch
    tokens are kept.

    Args:
        attentions: list of arrays ``(batch, heads, tokens, tokens)``, one
            per layer in order.
        grid_shape: ``(rows, cols)`` patch grid.
        num_prefix_tokens: int. Leading non-patch tokens (class,
            distillation and register tokens; 0 for a plain ``gap`` model).
        output_tokens: None, a sequence of row indices, or ``"patches"``
            (the mean of the patch rows). None: ``(0,)`` with prefix tokens,
            the patch rows without. ``rollout_rows(model)`` gives a model's.

    Returns:
        float64 array ``(batch, rows, cols)``: the share of the output
        token's information that flows from each patch (not renormalised;
        the shares of the prefix tokens make up the rest).
    """
    if not len(attentions):
        raise ValueError("attention_rollout needs the attention of at least one layer.")
    joint = None
    for attention in attentions:
        layer = _check_attention(attention, grid_shape, num_prefix_tokens).mean(axis=1)
        layer = layer + np.eye(layer.shape[-1])
        layer = layer / layer.sum(axis=-1, keepdims=True)
        joint = layer if joint is None else layer @ joint
    if output_tokens is None:
        output_tokens = (0,) if num_prefix_tokens else "patches"
    if isinstance(output_tokens, str):
        if output_tokens != "patches":
            raise ValueError(
                f"output_tokens must be row indices or 'patches', got {output_tokens!r}."
            )
        output_tokens = range(num_prefix_tokens, joint.shape[1])
    relevance = joint[:, list(output_tokens)].mean(axis=1)[:, num_prefix_tokens:]
    return relevance.reshape(-1, *grid_shape)


def rollout_rows(model):
    """The rows ``attention_rollout`` follows for ``model``: its head's tokens, or ``"patches"``."""
    return model.head_token_indices or "patches"


def patch_distances(grid_shape, stride):
    """Pixel distances between the patch centres ``(patches, patches)``.

    Args:
        grid_shape: ``(rows, cols)``.
        stride: ``(stride_h, stride_w)``: pixels between neighbouring
            patches (patch size, times the stem stride for hybrids).

    Returns:
        float64 array ``(rows * cols, rows * cols)``, row-major patch order.
    """
    rows, cols = np.meshgrid(np.arange(grid_shape[0]), np.arange(grid_shape[1]), indexing="ij")
    y = rows.reshape(-1) * float(stride[0])
    x = cols.reshape(-1) * float(stride[1])
    return np.hypot(y[:, None] - y[None, :], x[:, None] - x[None, :])


def mean_attention_distance(attentions, grid_shape, stride, num_prefix_tokens=1):
    """Mean attention distance in pixels (paper, Figure 7 right).

    For every query patch, the distance to each key patch weighted by the
    attention, averaged over the query patches. Prefix tokens (the class
    token) have no position: they are dropped as queries and as keys, and
    each query's weights over the patch keys are renormalised to sum to 1,
    so the value is the mean distance of the image information a head
    mixes in, whatever share it gives the class token.

    Args:
        attentions: list of arrays ``(batch, heads, tokens, tokens)``, one
            per layer.
        grid_shape: ``(rows, cols)`` patch grid.
        stride: ``(stride_h, stride_w)`` in pixels (``model.stride``).
        num_prefix_tokens: int. Leading non-patch tokens.

    Returns:
        float64 array ``(batch, layers, heads)``; average over the batch for
        the figure.
    """
    distances = patch_distances(grid_shape, stride)
    per_layer = []
    for attention in attentions:
        weights = _check_attention(attention, grid_shape, num_prefix_tokens)
        weights = weights[:, :, num_prefix_tokens:, num_prefix_tokens:]
        weights = weights / weights.sum(axis=-1, keepdims=True)
        per_layer.append(np.einsum("bhqk,qk->bh", weights, distances) / distances.shape[0])
    return np.stack(per_layer, axis=1)


def position_embedding_of(model):
    """The position embedding of a ``ViT`` at its own grid: learned, or the sin-cos table.

    Returns:
        ``(posemb, grid_shape, num_prefix_tokens)`` with ``posemb`` float32
        ``(tokens, hidden)`` and the prefix entries it holds (none for
        ``posemb="learn_grid"`` and ``"sincos2d"``).

    Raises:
        ValueError: for a model without position embeddings (``posemb="none"``).
    """
    if model.posemb == "none":
        raise ValueError("The model has no position embeddings (posemb='none').")
    grid = tuple(model.grid_size)
    if model.posemb == "sincos2d":
        table = sincos_position_embedding(grid, model.hidden_size)
        return ops.convert_to_numpy(table)[0].astype("float32"), grid, 0
    posemb = ops.convert_to_numpy(model.position_embedding.pos_embedding)[0]
    return posemb.astype("float32"), grid, model.position_embedding.num_prefix_tokens


def position_embedding_similarity(posemb, grid_shape, num_prefix_tokens=1):
    """Cosine similarity of each patch's position embedding with all others.

    Args:
        posemb: array ``(tokens, hidden)`` (or ``(1, tokens, hidden)``) with
            ``tokens = num_prefix_tokens + rows * cols``.
        grid_shape: ``(rows, cols)`` of the embedding.
        num_prefix_tokens: int. Leading entries (class token) to drop.

    Returns:
        float64 array ``(rows, cols, rows, cols)``: ``[i, j]`` is the map of
        patch ``(i, j)``'s similarity with every patch.
    """
    posemb = np.asarray(posemb, dtype="float64")
    if posemb.ndim == 3 and posemb.shape[0] == 1:
        posemb = posemb[0]
    tokens = num_prefix_tokens + grid_shape[0] * grid_shape[1]
    if posemb.ndim != 2 or posemb.shape[0] != tokens:
        raise ValueError(
            f"Expected a position embedding (tokens, hidden) with tokens = "
            f"{num_prefix_tokens} + {grid_shape[0]}x{grid_shape[1]} = {tokens}; "
            f"got shape {posemb.shape}."
        )
    patches = posemb[num_prefix_tokens:]
    norms = np.linalg.norm(patches, axis=-1, keepdims=True)
    unit = patches / np.maximum(norms, 1e-12)
    return (unit @ unit.T).reshape(*grid_shape, *grid_shape)


def embedding_filters_of(model):
    """The filters that see the pixels, as a kernel ``(kh, kw, channels, filters)``.

    A plain ViT: the patch-embedding kernel ``(P, P, C, D)``. A hybrid: its
    patch embedding is applied to ResNet features (1x1 over hundreds of
    channels), which is not an image, so the ResNet root convolution
    ``(7, 7, C, width)`` is returned instead, weight-standardised as the
    stem applies it.

    Returns:
        ``(kernel float32, description str)``.
    """
    if model.stem is None:
        kernel = model.embedding.kernel
        description = "patch-embedding filters"
    else:
        kernel = model.stem.conv_root.standardized_kernel()
        description = "ResNet root-conv filters (hybrid)"
    return ops.convert_to_numpy(kernel).astype("float32"), description


def embedding_filter_components(kernel, num_components=NUM_FILTER_COMPONENTS):
    """Principal components of the embedding filters (paper, Figure 7 left).

    The kernel's ``filters`` columns are the samples, each a
    ``kh * kw * channels`` vector; they are centred and decomposed with an
    SVD. Each component's sign is fixed so its largest entry is positive.

    Args:
        kernel: array ``(kh, kw, channels, filters)``.
        num_components: int. How many leading components to return (fewer
            when the filters span fewer dimensions: components without
            variance are dropped).

    Returns:
        ``(components, explained)``: float64 ``(k, kh, kw, channels)`` with
        unit norm, and the explained variance ratio ``(k,)``.
    """
    kernel = checked_array(kernel, "a kernel (kh, kw, channels, filters)")
    if int(num_components) < 1:
        raise ValueError(f"num_components must be >= 1, got {num_components}.")
    samples = kernel.reshape(-1, kernel.shape[-1]).T
    samples = samples - samples.mean(axis=0, keepdims=True)
    _, singular, components = np.linalg.svd(samples, full_matrices=False)
    rank = int(np.sum(singular > singular[:1] * 1e-10))
    count = max(1, min(int(num_components), rank))
    components = components[:count]
    peaks = components[np.arange(count), np.abs(components).argmax(axis=1)]
    components = components * np.where(peaks < 0, -1.0, 1.0)[:, None]
    variance = singular**2
    explained = variance[:count] / max(variance.sum(), 1e-30)
    return components.reshape(count, *kernel.shape[:3]), explained
