"""keras-vit's CPU kernels against independent references, and how they fail.

The references are Keras's own LayerNorm and a float64 NumPy attention
written here from the formula; the frozen model's parity with timm is in
``tests/model/test_frozen.py``.
"""

import logging
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vit import kernels
from keras_vit.digests import sha256_of
from keras_vit.kernels import build, library

HAS_COMPILER = shutil.which(os.environ.get("CXX") or "c++") is not None
pytestmark = pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler on this machine")


@pytest.fixture(scope="module")
def ops():
    return kernels.load()


def attention_reference(qkv, heads):
    """softmax(q k^T) v per head in float64: ``(B, T, 3W) -> (B, T, W)``."""
    batch, tokens, packed = qkv.shape
    width = packed // 3
    q, k, v = (
        qkv[..., i * width : (i + 1) * width]
        .astype(np.float64)
        .reshape(batch, tokens, heads, -1)
        .transpose(0, 2, 1, 3)
        for i in range(3)
    )
    logits = q @ k.transpose(0, 1, 3, 2)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return (weights @ v).transpose(0, 2, 1, 3).reshape(batch, tokens, width)


@pytest.mark.parametrize("shape", [(2, 197, 768), (3, 5, 16), (7, 3)])
def test_layer_norm_matches_keras(ops, shape):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, shape).astype("float32")  # an offset mean, as in the stream
    gamma = rng.normal(1.0, 0.1, shape[-1]).astype("float32")
    beta = rng.normal(0.0, 0.1, shape[-1]).astype("float32")
    got = ops.keras_vit_layer_norm(x, gamma, beta, epsilon=1e-6, U=tf.float32).numpy()
    expected = keras.ops.layer_normalization(x, gamma, beta, epsilon=1e-6)
    assert got.shape == shape
    np.testing.assert_allclose(got, np.asarray(expected), atol=2e-5)


def bfloat16_values(rng, shape):
    """float32 normal values exactly representable in bfloat16 (offset mean, as in the stream)."""
    return tf.cast(tf.cast(rng.normal(3.0, 2.0, shape).astype("float32"), tf.bfloat16), tf.float32)


def assert_rounded_once_to_bfloat16(got, exact):
    """``got`` (bf16) is float32 ``exact`` rounded once to nearest even: within half a bf16 step
    (2^-8 relative), and TensorFlow's own rounding but where summation orders differ at a
    rounding boundary."""
    assert got.dtype == tf.bfloat16
    got = tf.cast(got, tf.float32).numpy()
    assert np.all(np.abs(got - exact) <= 2.0**-8 * np.abs(exact) + 1e-6)
    assert np.mean(got != exact) > 0.5  # really rounded to bf16
    rounded = tf.cast(tf.cast(exact, tf.bfloat16), tf.float32).numpy()
    assert np.mean(got == rounded) > 0.999


@pytest.mark.parametrize("input_dtype", [tf.bfloat16, tf.float32])
def test_bfloat16_layer_norm_is_rounded_once_from_float32(ops, input_dtype):
    # Statistics, scale and offset in float32 from a bf16 input or a float32
    # stream, then one rounding to a bf16 output.
    rng = np.random.default_rng(2)
    x = bfloat16_values(rng, (2, 197, 768))
    gamma = rng.normal(1.0, 0.1, 768).astype("float32")
    beta = rng.normal(0.0, 0.1, 768).astype("float32")
    got = ops.keras_vit_layer_norm(
        tf.cast(x, input_dtype), gamma, beta, epsilon=1e-6, U=tf.bfloat16
    )
    exact = np.asarray(keras.ops.layer_normalization(x, gamma, beta, epsilon=1e-6))
    assert_rounded_once_to_bfloat16(got, exact)


@pytest.mark.parametrize(
    "branch_dtype,output_dtype",
    [(tf.float32, tf.float32), (tf.bfloat16, tf.bfloat16), (tf.float32, tf.bfloat16)],
)
def test_add_layer_norm_returns_the_sum_and_its_layer_norm(ops, branch_dtype, output_dtype):
    # The float32 stream plus the branch (a bf16 branch under mixed
    # precision), exactly as float32 adds it, and Keras's LayerNorm of that
    # sum, in the output's dtype.
    rng = np.random.default_rng(3)
    stream = rng.normal(3.0, 2.0, (2, 197, 768)).astype("float32")
    branch = bfloat16_values(rng, (2, 197, 768))
    gamma = rng.normal(1.0, 0.1, 768).astype("float32")
    beta = rng.normal(0.0, 0.1, 768).astype("float32")
    total, normed = ops.keras_vit_add_layer_norm(
        stream, tf.cast(branch, branch_dtype), gamma, beta, epsilon=1e-6, U=output_dtype
    )
    assert total.dtype == tf.float32
    np.testing.assert_array_equal(total.numpy(), stream + branch.numpy())
    exact = np.asarray(
        keras.ops.layer_normalization(stream + branch.numpy(), gamma, beta, epsilon=1e-6)
    )
    if output_dtype == tf.bfloat16:
        assert_rounded_once_to_bfloat16(normed, exact)
    else:
        np.testing.assert_allclose(normed.numpy(), exact, atol=2e-5)


@pytest.mark.parametrize(
    "batch,tokens,heads,head_dim",
    # ViT-B's heads; fewer tokens than a tile's rows; ViT-H's head size 80
    # (not a multiple of the vector tile); odd sizes
    [(2, 197, 12, 64), (1, 50, 3, 8), (3, 1, 2, 4), (1, 257, 2, 80), (2, 7, 2, 33)],
)
def test_self_attention_matches_the_formula(ops, batch, tokens, heads, head_dim):
    rng = np.random.default_rng(1)
    # logits of a few units, as a pre-scaled query gives (float32 rounds larger ones)
    qkv = rng.normal(0.0, 0.5, (batch, tokens, 3 * heads * head_dim)).astype("float32")
    got = ops.keras_vit_self_attention(qkv, num_heads=heads).numpy()
    np.testing.assert_allclose(got, attention_reference(qkv, heads), atol=1e-5)


def test_softmax_keeps_large_logits_finite(ops):
    # Logits 80 apart: the row maximum is subtracted first, so nothing
    # overflows, and exp(-160) is taken at the kernel's floor, exp(-87).
    qkv = np.zeros((1, 3, 6), "float32")
    qkv[0, :, 0] = 1.0  # query
    qkv[0, :, 2] = [0.0, 80.0, -80.0]  # key
    qkv[0, :, 4] = [1.0, 2.0, 3.0]  # value
    got = ops.keras_vit_self_attention(qkv, num_heads=1).numpy()
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, attention_reference(qkv, 1), atol=1e-6)


def test_empty_batches_pass_through(ops):
    assert ops.keras_vit_self_attention(np.zeros((0, 4, 12), "float32"), num_heads=2).shape == (
        0,
        4,
        4,
    )
    ones, zeros = np.ones(8, "float32"), np.zeros(8, "float32")
    empty = np.zeros((0, 8), "float32")
    assert ops.keras_vit_layer_norm(empty, ones, zeros, epsilon=1e-6, U=tf.float32).shape == (0, 8)
    total, normed = ops.keras_vit_add_layer_norm(
        empty, empty, ones, zeros, epsilon=1e-6, U=tf.float32
    )
    assert total.shape == normed.shape == (0, 8)


def add_layer_norm_of_zeros(ops, branch_rows=2, offset_values=8):
    """``KerasVitAddLayerNorm`` of a (2, 8) stream and a (branch_rows, 8) branch."""
    stream, branch = np.zeros((2, 8), "float32"), np.zeros((branch_rows, 8), "float32")
    gamma, beta = np.ones(8, "float32"), np.zeros(offset_values, "float32")
    return ops.keras_vit_add_layer_norm(stream, branch, gamma, beta, epsilon=1e-6, U=tf.float32)


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda ops: ops.keras_vit_self_attention(np.zeros((4, 12), "float32"), num_heads=2),
            "qkv must be \\(batch, tokens, 3 \\* width\\), got rank 2",
        ),
        (
            lambda ops: ops.keras_vit_self_attention(np.zeros((1, 4, 10), "float32"), num_heads=2),
            "must be a multiple of 3 \\* num_heads = 6",
        ),
        (
            lambda ops: ops.keras_vit_layer_norm(
                np.zeros((2, 8), "float32"),
                np.ones(7, "float32"),
                np.zeros(8, "float32"),
                epsilon=1e-6,
                U=tf.float32,
            ),
            "gamma and beta must have 8 values, got 7 and 8",
        ),
        (
            lambda ops: add_layer_norm_of_zeros(ops, offset_values=9),
            "KerasVitAddLayerNorm: gamma and beta must have 8 values, got 8 and 9",
        ),
        (
            lambda ops: add_layer_norm_of_zeros(ops, branch_rows=3),
            "stream and branch must have one shape|Dimensions must be equal",
        ),
    ],
)
def test_bad_shapes_are_refused_with_what_was_expected(ops, call, message):
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        call(ops)


def test_the_library_is_built_once_and_checked_before_each_load(ops):
    path = library.library_path()
    assert os.path.isfile(path) and library.is_intact(path)
    assert kernels.load() is ops  # one load per process
    with open(path + ".sha256", "w", encoding="ascii") as file:
        file.write("0" * 64)
    try:
        assert not library.is_intact(path)  # a changed library is built again
    finally:
        with open(path + ".sha256", "w", encoding="ascii") as file:
            file.write(sha256_of(path))


def test_the_cache_key_follows_the_compiler_and_the_tensorflow(monkeypatch):
    path = library.library_path()
    monkeypatch.setattr(tf, "__version__", tf.__version__ + ".other")
    assert library.library_path() != path


def test_a_missing_compiler_is_named(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-keras-vit")
    missing = "'no-such-compiler-keras-vit' is not on PATH"
    with pytest.raises(kernels.KernelBuildError, match=missing):
        kernels.load()


def test_a_failing_compiler_is_reported_once_with_its_output(monkeypatch, tmp_path, caplog):
    fake = tmp_path / "fake-cxx"
    fake.write_text("#!/bin/sh\necho 'vit_kernels.cc:1: error: broken' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    monkeypatch.setenv("KERAS_VIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(library, "_LOADED", {})
    with caplog.at_level(logging.INFO, logger="keras_vit"):
        with pytest.raises(kernels.KernelBuildError, match="exit status 3.*\n.*error: broken"):
            kernels.load()
        with pytest.raises(kernels.KernelBuildError, match="exit status 3"):
            kernels.load()  # the same error, without a second build
    assert sum("Compiling keras-vit's CPU kernels" in r.message for r in caplog.records) == 1
    assert not os.listdir(tmp_path / "cache" / "kernels")  # nothing half-written


def test_an_unwritable_cache_is_named(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("KERAS_VIT_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(library, "_LOADED", {})
    with pytest.raises(kernels.KernelBuildError, match="could not be written .*KERAS_VIT_CACHE"):
        kernels.load()


def test_the_compile_command_uses_tensorflows_own_flags():
    import tensorflow as tf

    argv = build.command("c++", "out.so")
    assert str(build.SOURCE) in argv and "-march=native" in argv
    for flag in tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags():
        assert flag in argv
