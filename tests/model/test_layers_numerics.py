"""Numerics of the fast layer internals (fused QKV, head-major attention, 2-D MLP).

The speed-oriented bodies of ``MultiHeadSelfAttention`` and ``MlpBlock`` must
give the reference numbers in every execution mode the benchmarks use (eager,
TensorFlow graph with oneDNN fusions, XLA), route gradients to the three
official kernels, and keep the softmax in float32 under mixed precision.
References: the timm fixtures and NumPy / per-kernel TensorFlow formulas.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vit import model_from_checkpoint
from keras_vit.model import blocks as vit_blocks

from conftest import fixture_case

TOL = 1e-5
MODES = {
    "eager": lambda f: f,
    "graph": lambda f: tf.function(f, jit_compile=False),
    "xla": lambda f: tf.function(f, jit_compile=True),
}


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def numpy_attention(x, w, head_dim):
    """Official-layout attention in NumPy: per-kernel projections, logits scaled."""
    q, k, v = (
        np.einsum("btd,dhk->bthk", x, w[f"{n}_kernel"]) + w[f"{n}_bias"]
        for n in ("query", "key", "value")
    )
    logits = np.einsum("bqhk,bshk->bhqs", q, k) / math.sqrt(head_dim)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = np.einsum("bhqs,bshk->bqhk", probs, v)
    return np.einsum("bthk,hkd->btd", context, w["out_kernel"]) + w["out_bias"], probs


def randomised_attention(hidden, heads, seed=0):
    """Attention layer with all weights, biases included, at 1/sqrt(fan-in) scale."""
    rng = np.random.default_rng(seed)
    layer = vit_blocks.MultiHeadSelfAttention(heads)
    layer.build((None, None, hidden))
    for variable in layer.weights:
        variable.assign(rng.normal(size=variable.shape) / math.sqrt(hidden))
    return layer, {v.name: v.numpy() for v in layer.weights}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("hidden,heads", [(48, 4), (36, 3)])  # head_dim 12: scale not a power of 2
def test_attention_matches_numpy_in_every_mode(mode, hidden, heads):
    layer, w = randomised_attention(hidden, heads)
    x = np.random.default_rng(1).normal(size=(2, 7, hidden)).astype("float32")
    expected, expected_probs = numpy_attention(x, w, hidden // heads)
    out = MODES[mode](lambda t: layer(t))(tf.constant(x))
    out_explicit, scores = MODES[mode](lambda t: layer(t, return_attention_scores=True))(
        tf.constant(x)
    )
    assert max_diff(out, expected) <= TOL
    assert max_diff(out_explicit, expected) <= TOL
    assert max_diff(scores, expected_probs) <= TOL
    assert scores.shape == (2, heads, 7, 7)


def test_fused_projection_routes_gradients_to_each_official_kernel():
    layer, w = randomised_attention(48, 4, seed=2)
    x = tf.constant(np.random.default_rng(3).normal(size=(2, 5, 48)).astype("float32"))

    def reference(x, variables):
        q, k, v = (
            tf.einsum("btd,dhk->bthk", x, variables[f"{n}_kernel"]) + variables[f"{n}_bias"]
            for n in ("query", "key", "value")
        )
        probs = tf.nn.softmax(tf.einsum("bqhk,bshk->bhqs", q, k) / math.sqrt(12.0), axis=-1)
        context = tf.einsum("bhqs,bshk->bqhk", probs, v)
        return tf.einsum("bthk,hkd->btd", context, variables["out_kernel"]) + variables["out_bias"]

    copies = {name: tf.Variable(value) for name, value in w.items()}
    with tf.GradientTape(persistent=True) as tape:
        ours = tf.reduce_sum(tf.sin(layer(x)))
        theirs = tf.reduce_sum(tf.sin(reference(x, copies)))
    for variable in layer.trainable_weights:
        grad = tape.gradient(ours, variable)
        assert grad.shape == variable.shape
        assert max_diff(grad, tape.gradient(theirs, copies[variable.name])) <= TOL, variable.name


@pytest.mark.parametrize("mode", ["graph", "xla"])
def test_fixture_logits_in_compiled_modes(fixtures_dir, mode):
    _, ref = fixture_case("vit_token")
    model = model_from_checkpoint(
        fixtures_dir / "vit_token" / "official.npz", num_heads=4, semantics="timm"
    )
    logits = MODES[mode](lambda t: model(t, training=False))(tf.constant(ref["inputs"]))
    assert max_diff(logits, ref["logits"]) <= TOL


def test_mlp_block_keeps_rank_and_matches_numpy():
    block = vit_blocks.MlpBlock(16)
    x = np.random.default_rng(4).normal(size=(2, 3, 5, 8)).astype("float32")  # any leading dims
    out = block(x)
    w0, b0, w1, b1 = (v.numpy() for v in block.weights)
    hidden = x @ w0 + b0
    from scipy.special import erf

    expected = (0.5 * hidden * (1 + erf(hidden / math.sqrt(2)))) @ w1 + b1
    assert out.shape == x.shape
    assert max_diff(out, expected) <= TOL


def test_mixed_bfloat16_keeps_softmax_float32_and_agrees_with_float32(fixtures_dir):
    _, ref = fixture_case("vit_token")
    path = fixtures_dir / "vit_token" / "official.npz"
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = model_from_checkpoint(path, num_heads=4, semantics="timm")
    out = tf.function(lambda t: model.forward_intermediates(t, return_attention=True))(
        tf.constant(ref["inputs"])
    )
    assert out["patches"].dtype == tf.bfloat16
    assert out["block_0"].dtype == tf.float32  # the residual stream stays float32
    assert out["attention_0"].dtype == tf.float32
    assert max_diff(tf.reduce_sum(out["attention_0"], -1), 1.0) <= 1e-6
    assert out["logits"].dtype == tf.float32
    logits = out["logits"].numpy()
    scale = np.abs(ref["logits"]).max()
    # bf16 keeps 8 mantissa bits: about 1e-2 relative through two blocks.
    assert max_diff(logits, ref["logits"]) <= 0.05 * scale
    assert max_diff(logits, ref["logits"]) > TOL  # really ran in bfloat16
    np.testing.assert_array_equal(logits.argmax(-1), ref["logits"].argmax(-1))
