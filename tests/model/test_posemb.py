"""Position-embedding resize against live references: torch and scipy."""

import numpy as np
import pytest
import tensorflow as tf

from keras_vit.model.posemb import resize_position_embedding

TOL = 1e-5
# (source grid, target grid): up, down, non-square both ways, mixed.
GRIDS = [
    ((4, 4), (6, 6)),
    ((6, 6), (4, 4)),
    ((4, 6), (7, 3)),
    ((7, 5), (3, 9)),
    ((14, 14), (24, 24)),
]


def posemb(grid, prefix=1, hidden=8, seed=0):
    tokens = prefix + grid[0] * grid[1]
    return np.random.default_rng(seed).normal(size=(1, tokens, hidden)).astype(np.float32)


def grid_of(x, grid, prefix=1):
    return x[0, prefix:].reshape(*grid, -1)


def torch_resize(x, grid, target, **kwargs):
    torch = pytest.importorskip("torch")
    image = torch.from_numpy(grid_of(x, grid)).permute(2, 0, 1)[None]
    out = torch.nn.functional.interpolate(image, size=target, align_corners=False, **kwargs)
    return out[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("source,target", GRIDS)
@pytest.mark.parametrize(
    "method,torch_kwargs",
    [
        ("bicubic", dict(mode="bicubic", antialias=True)),
        ("bicubic_hf", dict(mode="bicubic", antialias=False)),
        ("bilinear", dict(mode="bilinear", antialias=False)),
    ],
)
def test_matches_torch_interpolate(source, target, method, torch_kwargs):
    x = posemb(source)
    ours = resize_position_embedding(x, target, method=method, source_grid_shape=source)
    expected = torch_resize(x, source, target, **torch_kwargs)
    assert np.max(np.abs(grid_of(ours, target) - expected)) <= TOL
    np.testing.assert_array_equal(ours[:, :1], x[:, :1])  # class token kept apart


@pytest.mark.parametrize("source,target", GRIDS)
def test_official_matches_scipy_zoom(source, target):
    from scipy import ndimage

    x = posemb(source, prefix=0)
    zoom = (target[0] / source[0], target[1] / source[1], 1)
    expected = ndimage.zoom(grid_of(x, source, 0), zoom, order=1)
    assert expected.shape[:2] == target
    ours = resize_position_embedding(
        x, target, num_prefix_tokens=0, method="official", source_grid_shape=source
    )
    assert np.max(np.abs(grid_of(ours, target, 0) - expected)) <= TOL


def test_methods_differ():
    x = posemb((4, 4))
    results = [
        resize_position_embedding(x, (6, 6), method=m)
        for m in ("official", "bilinear", "bicubic", "bicubic_hf")
    ]
    for i, a in enumerate(results):
        for b in results[i + 1 :]:
            assert np.max(np.abs(a - b)) > 1e-3


@pytest.mark.parametrize("method", ["official", "bilinear", "bicubic", "bicubic_hf"])
def test_graph_path_with_symbolic_size_equals_numpy_path(method):
    x = posemb((4, 6))

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
    def resize(rows, cols):
        return resize_position_embedding(
            tf.constant(x), (rows, cols), method=method, source_grid_shape=(4, 6)
        )

    graph = resize(tf.constant(7), tf.constant(3)).numpy()
    eager = resize_position_embedding(x, (7, 3), method=method, source_grid_shape=(4, 6))
    np.testing.assert_allclose(graph, eager, atol=1e-6)
