"""Figures of the analysis numbers: the paper's Figures 6 and 7, and few-shot accuracy.

matplotlib without pyplot (an Agg canvas per figure, no global state),
written atomically as PNGs of fixed pixel sizes (``FIGURE_SIZES_PX``):
``save_rollout_overlay``, ``save_attention_distance_plot``,
``save_position_similarity_plot``, ``save_embedding_filters_plot`` and
``save_fewshot_plot``.
"""

from __future__ import annotations

import os

import numpy as np
from keras import ops

from keras_vit.analysis.inspection import checked_array
from keras_vit.atomic import atomic_path
from keras_vit.model.posemb import interpolation_matrix

#: Pixel size ``(width, height)`` of each figure (saved at ``FIGURE_DPI``).
FIGURE_SIZES_PX = {
    "rollout": (768, 288),
    "attention_distance": (800, 600),
    "position_similarity": (800, 800),
    "embedding_filters": (800, 520),
    "fewshot": (640, 480),
}
FIGURE_DPI = 100


def new_figure(kind):
    """A matplotlib ``Figure`` (no pyplot state) of ``FIGURE_SIZES_PX[kind]`` pixels."""
    from matplotlib.figure import Figure

    width, height = FIGURE_SIZES_PX[kind]
    return Figure(figsize=(width / FIGURE_DPI, height / FIGURE_DPI), dpi=FIGURE_DPI)


def save_figure(figure, path):
    """Writes ``figure`` as a PNG to a temporary file, then moves it to ``path``."""
    with atomic_path(path, ".png") as partial:
        figure.savefig(partial, format="png", dpi=FIGURE_DPI)
    return os.fspath(path)


def _displayable(image):
    """[-1, 1] image ``(h, w, c)`` -> [0, 1] array and colour map for imshow."""
    image = np.clip((np.asarray(image, dtype="float32") + 1.0) / 2.0, 0.0, 1.0)
    if image.shape[-1] == 1:
        return image[..., 0], "gray"
    if image.shape[-1] != 3:
        raise ValueError(f"Can only draw images with 1 or 3 channels; got shape {image.shape}.")
    return image, None


def save_rollout_overlay(image, heat_map, path, title=None):
    """Saves an image with its rollout map: input, overlay (with its colour bar), image x mask.

    Args:
        image: array ``(height, width, channels)`` in [-1, 1].
        heat_map: array ``(rows, cols)`` from ``attention_rollout``; scaled
            to a maximum of 1 and stretched over the image (bilinear).
        path: output ``.png``; ``FIGURE_SIZES_PX["rollout"]`` pixels.
        title: optional figure title (e.g. the file name).

    Returns:
        The path written.
    """
    pixels, cmap = _displayable(image)
    heat_map = np.asarray(heat_map, dtype="float64")
    heat_map = heat_map / max(heat_map.max(), 1e-12)
    height, width = pixels.shape[:2]
    mask = _upsample(heat_map, (height, width))
    masked = pixels * (mask if pixels.ndim == 2 else mask[..., None])
    figure = new_figure("rollout")
    panels = figure.subplots(1, 3)
    extent = (0, width, height, 0)
    panels[0].imshow(pixels, cmap=cmap, vmin=0, vmax=1, extent=extent)
    panels[0].set_title("input", fontsize=9)
    panels[1].imshow(pixels, cmap=cmap, vmin=0, vmax=1, extent=extent)
    panels[1].imshow(mask, cmap=_ROLLOUT_CMAP, alpha=0.5, vmin=0, vmax=1, extent=extent)
    panels[1].set_title("attention rollout", fontsize=9)
    panels[2].imshow(masked, cmap=cmap, vmin=0, vmax=1, extent=extent)
    panels[2].set_title("image x rollout mask", fontsize=9)
    for panel in panels:
        panel.set_axis_off()
    if title:
        figure.suptitle(title, fontsize=9)
    figure.subplots_adjust(left=0.01, right=0.91, bottom=0.02, top=0.84, wspace=0.04)
    _colour_bar(figure, (0.925, 0.1, 0.012, 0.68), "rollout / its maximum")
    return save_figure(figure, path)


_ROLLOUT_CMAP = "jet"


def _colour_bar(figure, rect, label):
    """An opaque colour bar of ``_ROLLOUT_CMAP`` over [0, 1] in ``rect`` (figure fractions)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = figure.colorbar(
        ScalarMappable(Normalize(0.0, 1.0), _ROLLOUT_CMAP), cax=figure.add_axes(rect)
    )
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=6)
    return bar


def _upsample(grid, size):
    """Bilinear (half-pixel centres) resize of a 2-D map to ``size``."""
    rows = ops.convert_to_numpy(interpolation_matrix(grid.shape[0], size[0], "bilinear"))
    cols = ops.convert_to_numpy(interpolation_matrix(grid.shape[1], size[1], "bilinear"))
    return np.clip(rows @ grid @ cols.T, 0.0, 1.0)


def save_attention_distance_plot(distances, path, title=None, uniform_distance=None):
    """Scatter of mean attention distance per head against depth (Figure 7 right).

    Args:
        distances: array ``(layers, heads)`` in pixels (the batch mean of
            ``mean_attention_distance``).
        path: output ``.png``; ``FIGURE_SIZES_PX["attention_distance"]``
            pixels.
        title: optional title (e.g. the model name).
        uniform_distance: optional float. Distance of a head that attends
            uniformly to all patches (``patch_distances(...).mean()``),
            drawn as a dashed reference line.

    Returns:
        The path written.
    """
    distances = checked_array(distances, "distances (layers, heads)")
    layers, heads = distances.shape
    figure = new_figure("attention_distance")
    axes = figure.subplots()
    colours = _head_colours(heads)
    for head in range(heads):
        axes.scatter(
            np.arange(layers),
            distances[:, head],
            s=18,
            color=colours[head],
            label=f"head {head}" if heads <= 16 else None,
        )
    if uniform_distance is not None:
        axes.axhline(
            uniform_distance, color="grey", linestyle="--", linewidth=1, label="uniform attention"
        )
    axes.set_xlabel("network depth (layer)")
    axes.set_ylabel("mean attention distance (pixels)")
    axes.set_xticks(np.arange(layers))
    axes.set_ylim(0, 1.08 * max(np.nanmax(distances), uniform_distance or 0.0, 1e-9))
    axes.grid(alpha=0.3)
    if heads <= 16 or uniform_distance is not None:
        axes.legend(fontsize=7, ncol=2, loc="lower right")
    axes.set_title(title or "mean attention distance per head", fontsize=10)
    figure.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.92)
    return save_figure(figure, path)


def _head_colours(count):
    from matplotlib import colormaps

    return colormaps["viridis"](np.linspace(0.0, 0.9, count))


def _mosaic(tiles, columns, gap=1):
    """Tiles ``(n, h, w[, c])`` -> one image with NaN gaps, ``columns`` wide."""
    count, height, width = tiles.shape[:3]
    rows = -(-count // columns)
    shape = (rows * (height + gap) - gap, columns * (width + gap) - gap, *tiles.shape[3:])
    mosaic = np.full(shape, np.nan)
    for index, tile in enumerate(tiles):
        top = (index // columns) * (height + gap)
        left = (index % columns) * (width + gap)
        mosaic[top : top + height, left : left + width] = tile
    return mosaic


def save_position_similarity_plot(similarity, path, title=None):
    """Grid of small maps of position-embedding similarity (Figure 7 centre).

    Args:
        similarity: array ``(rows, cols, rows, cols)`` from
            ``position_embedding_similarity``; tile ``(i, j)`` sits at input
            patch row ``i``, column ``j``.
        path: output ``.png``; ``FIGURE_SIZES_PX["position_similarity"]``
            pixels.
        title: optional title.

    Returns:
        The path written.
    """
    from matplotlib import colormaps

    similarity = checked_array(similarity, "similarity (rows, cols, rows, cols)")
    rows, cols = similarity.shape[:2]
    mosaic = _mosaic(similarity.reshape(rows * cols, rows, cols), columns=cols)
    figure = new_figure("position_similarity")
    axes = figure.subplots()
    cmap = colormaps["viridis"].with_extremes(bad="white")
    shown = axes.imshow(np.ma.masked_invalid(mosaic), cmap=cmap, vmin=-1, vmax=1)
    axes.set_xticks([(j + 0.5) * (cols + 1) - 1 for j in range(cols)], range(1, cols + 1))
    axes.set_yticks([(i + 0.5) * (rows + 1) - 1 for i in range(rows)], range(1, rows + 1))
    axes.tick_params(labelsize=7, length=0)
    axes.set_xlabel("input patch column")
    axes.set_ylabel("input patch row")
    figure.colorbar(shown, ax=axes, fraction=0.04, pad=0.02, label="cosine similarity")
    axes.set_title(title or "position embedding similarity", fontsize=10)
    figure.subplots_adjust(left=0.08, right=0.86, bottom=0.07, top=0.94)
    return save_figure(figure, path)


def save_embedding_filters_plot(components, path, explained=None, title=None):
    """Principal components of the embedding filters as tiles (Figure 7 left).

    Each component is scaled to [0, 1] on its own (min-max) and drawn as
    RGB for 3 channels, grayscale for 1 and, for other channel counts, as
    the mean over channels.

    Args:
        components: array ``(k, kh, kw, channels)`` from
            ``embedding_filter_components``.
        path: output ``.png``; ``FIGURE_SIZES_PX["embedding_filters"]``
            pixels.
        explained: optional explained variance ratios ``(k,)`` (put in the
            title).
        title: optional title.

    Returns:
        The path written.
    """
    components = checked_array(components, "components (k, kh, kw, channels)")
    if components.shape[-1] != 3:
        components = components.mean(axis=-1)
    low = components.min(axis=tuple(range(1, components.ndim)), keepdims=True)
    high = components.max(axis=tuple(range(1, components.ndim)), keepdims=True)
    tiles = (components - low) / np.maximum(high - low, 1e-12)
    columns = min(7, len(tiles))
    mosaic = _mosaic(tiles, columns=columns)
    figure = new_figure("embedding_filters")
    axes = figure.subplots()
    if mosaic.ndim == 3:
        mosaic = np.where(np.isnan(mosaic), 1.0, mosaic)
        axes.imshow(mosaic, interpolation="nearest")
    else:
        axes.imshow(np.ma.masked_invalid(mosaic), cmap="gray", interpolation="nearest")
    axes.set_axis_off()
    heading = title or "principal components of the embedding filters"
    if explained is not None:
        heading += f" ({len(tiles)} components, {100 * float(np.sum(explained)):.0f}% of variance)"
    axes.set_title(heading, fontsize=10)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.92)
    return save_figure(figure, path)


def save_fewshot_plot(results, path, title=None, num_classes=None):
    """Accuracy against shots per class, mean with the spread over seeds.

    Args:
        results: dict from ``fewshot_evaluate``.
        path: output ``.png`` of ``FIGURE_SIZES_PX["fewshot"]`` pixels.
        title: optional title.
        num_classes: optional int; draws the chance level ``1 / classes``.

    Returns:
        The path written.
    """
    shots = sorted(results)
    means = np.array([results[s]["mean"] for s in shots]) * 100
    stds = np.array([results[s]["std"] for s in shots]) * 100
    figure = new_figure("fewshot")
    axes = figure.subplots()
    axes.errorbar(shots, means, yerr=stds, marker="o", capsize=4, label="mean +- std over seeds")
    if num_classes:
        axes.axhline(100.0 / num_classes, color="grey", linestyle="--", linewidth=1, label="chance")
    axes.legend(fontsize=8, loc="center right")
    axes.set_xscale("log")
    axes.set_xticks(shots, [str(s) for s in shots])
    axes.set_xlabel("training examples per class (shots)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.set_title(title or "few-shot linear evaluation", fontsize=10)
    figure.subplots_adjust(left=0.12, right=0.96, bottom=0.12, top=0.92)
    return save_figure(figure, path)
