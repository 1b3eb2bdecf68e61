"""Layers: shapes, config round trips, numerics of the building blocks."""

import math

import keras
import numpy as np
import pytest
from scipy.special import erf

import keras_vit
from keras_vit.data.images import load_image, preprocess_input
from keras_vit.model import blocks as vit_blocks
from keras_vit.model import layers as vit_layers
from keras_vit.model import ops as vit_ops

rng = np.random.default_rng(0)

LAYER_CASES = [
    (vit_layers.PatchEncoder(16, 4), (2, 8, 12, 3), (2, 6, 16)),
    (vit_layers.ClassToken(), (2, 5, 16), (2, 6, 16)),
    (vit_layers.AddPositionEmbs((2, 3), 1, "bicubic"), (2, 7, 16), (2, 7, 16)),
    (vit_blocks.MultiHeadSelfAttention(4, 0.1), (2, 7, 16), (2, 7, 16)),
    (vit_blocks.MlpBlock(32, 0.1, True), (2, 7, 16), (2, 7, 16)),
    (vit_blocks.TransformerBlock(4, 32, 0.1, 0.1, 0.1, 1e-12, True), (2, 7, 16), (2, 7, 16)),
]


@pytest.mark.parametrize("layer, in_shape, out_shape", LAYER_CASES, ids=lambda c: type(c).__name__)
def test_layer_shapes_and_config_round_trip(layer, in_shape, out_shape):
    x = rng.normal(size=in_shape).astype("float32")
    y = layer(x)
    assert tuple(y.shape) == out_shape
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x), y, atol=1e-6)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer), safe_mode=True
    )
    assert type(restored) is type(layer)


def test_patch_encoder_is_a_linear_map_of_each_patch():
    layer = vit_layers.PatchEncoder(5, 2)
    x = rng.normal(size=(1, 4, 4, 3)).astype("float32")
    y = layer(x).numpy()
    kernel = layer.kernel.numpy().reshape(-1, 5)
    # token 1 = row 0, column 1 of the 2x2 grid (row-major)
    patch = x[0, 0:2, 2:4, :].reshape(-1)
    np.testing.assert_allclose(y[0, 1], patch @ kernel + layer.bias.numpy(), atol=1e-5)


def test_attention_fast_path_equals_explicit_path():
    layer = vit_blocks.MultiHeadSelfAttention(4)
    x = rng.normal(size=(2, 9, 16)).astype("float32")
    fast = layer(x)
    explicit, scores = layer(x, return_attention_scores=True)
    np.testing.assert_allclose(fast, explicit, atol=1e-5)
    assert scores.shape == (2, 4, 9, 9)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="reads a TensorFlow graph")
def test_attention_is_head_major_by_one_transpose_of_the_fused_projection():
    # (B, T, 3, heads, head_dim) -> (3, B, heads, T, head_dim) once, unstacked
    # along its first axis (slices of one buffer), the key's for the logits
    # (Grappler folds it into the batched matmul's adjoint) and the attended
    # values back: three transposes, where unstacking first took five.
    import tensorflow as tf

    layer = vit_blocks.MultiHeadSelfAttention(4)
    layer.build((None, 9, 16))
    graph = (
        tf.function(lambda x: layer(x))
        .get_concrete_function(tf.TensorSpec((None, 9, 16), tf.float32))
        .graph
    )
    ops = graph.get_operations()
    assert [op.type for op in ops].count("Transpose") == 3
    (unpack,) = [op for op in ops if op.type == "Unpack"]
    assert unpack.get_attr("axis") == 0 and unpack.get_attr("num") == 3
    assert unpack.inputs[0].op.type == "Transpose" and unpack.inputs[0].shape.rank == 5


def test_attention_matches_a_numpy_reference():
    layer = vit_blocks.MultiHeadSelfAttention(2)
    x = rng.normal(size=(1, 3, 4)).astype("float32")
    layer(x)
    w = {v.name: v.numpy() for v in layer.weights}
    q = np.einsum("btd,dhk->bthk", x, w["query_kernel"]) + w["query_bias"]
    k = np.einsum("btd,dhk->bthk", x, w["key_kernel"]) + w["key_bias"]
    v = np.einsum("btd,dhk->bthk", x, w["value_kernel"]) + w["value_bias"]
    logits = np.einsum("bqhk,bshk->bhqs", q, k) / math.sqrt(2)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ctx = np.einsum("bhqs,bshk->bqhk", probs, v)
    expected = np.einsum("bthk,hkd->btd", ctx, w["out_kernel"]) + w["out_bias"]
    np.testing.assert_allclose(layer(x), expected, atol=1e-5)


def test_gelu_exact_and_tanh_forms():
    x = np.linspace(-5, 5, 101).astype("float32")
    exact = 0.5 * x * (1 + erf(x / np.sqrt(2)))
    tanh = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(vit_ops.gelu(x), exact, atol=1e-6)
    np.testing.assert_allclose(vit_ops.gelu(x, approximate=True), tanh, atol=1e-6)
    assert np.abs(exact - tanh).max() > 1e-4


def test_drop_path_drops_whole_samples_in_training_only():
    block = vit_blocks.TransformerBlock(2, 8, drop_path_rate=0.5)
    x = rng.normal(size=(64, 3, 4)).astype("float32")
    np.testing.assert_allclose(block(x, training=False), block(x), atol=1e-6)
    trained = block(x, training=True).numpy()
    # With both branches dropped, a sample passes through unchanged.
    unchanged = np.all(np.isclose(trained, x, atol=1e-6), axis=(1, 2))
    assert 0 < unchanged.sum() < 64


def test_add_position_embs_resizes_to_another_grid():
    layer = vit_layers.AddPositionEmbs((2, 2), 1, "official")
    tokens = np.zeros((1, 5, 3), "float32")
    layer(tokens)
    out = layer(np.zeros((1, 1 + 12, 3), "float32"), grid_shape=(3, 4)).numpy()
    expected = keras_vit.resize_position_embedding(
        layer.pos_embedding.numpy(), (3, 4), 1, "official"
    )
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_preprocess_input_maps_0_255_to_minus_one_one():
    np.testing.assert_allclose(
        preprocess_input(np.array([0, 127.5, 255], "float32")), [-1, 0, 1], atol=1e-6
    )
    assert preprocess_input(np.array([0, 255], "uint8")).dtype == np.float32


def test_load_image_resizes_and_converts_channels(tmp_path):
    from PIL import Image
    from skimage import data

    path = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()).save(path)
    rgb = load_image(path, 64)
    gray = load_image(path, (32, 48), channels=1)
    assert rgb.shape == (64, 64, 3) and gray.shape == (32, 48, 1)
    assert rgb.min() >= 0 and rgb.max() <= 255 and rgb.std() > 10


def test_load_image_rejects_non_images(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ValueError, match="Cannot decode"):
        load_image(path, 32)


def test_residual_stream_stays_float32_under_mixed_precision():
    # Tokens with a large common offset: bfloat16 (8 significant bits) rounds
    # 1000 + N(0, 1) to steps of 4 or 8, which would wipe out what LayerNorm
    # normalises and what a block adds to the stream.
    rng = np.random.default_rng(0)
    tokens = (1000.0 + rng.normal(size=(2, 5, 16))).astype("float32")
    norm_fp32 = vit_layers.LayerNorm(epsilon=1e-6)
    expected = keras.ops.convert_to_numpy(norm_fp32(tokens))
    norm_mixed = vit_layers.LayerNorm(epsilon=1e-6, dtype="mixed_bfloat16")
    out = norm_mixed(tokens)
    assert out.dtype == "bfloat16"  # ready for the next GEMM
    # bfloat16 output rounding only: 2^-8 relative to values of about 3.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out).astype("float32"), expected, atol=3 * 2.0**-8
    )

    block = vit_blocks.TransformerBlock(num_heads=2, mlp_dim=32, dtype="mixed_bfloat16")
    y = block(tokens)
    assert y.dtype == "float32"
    # The block adds small branches to the stream: they must survive in it.
    added = keras.ops.convert_to_numpy(y) - tokens
    assert np.abs(added).max() > 0
    assert np.abs(added).max() < 100.0
    assert np.abs(np.round(added * 8) - added * 8).max() > 1e-3  # not on bfloat16's grid at 1000
