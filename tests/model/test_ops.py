"""Training-time XLA fusion (keras_vit.model.ops): same numbers and gradients, XLA-free exports."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vit
from keras_vit.model import frozen
from keras_vit.model import layers as vit_layers

rng = np.random.default_rng(0)


def _small_vit(**kwargs):
    return keras_vit.ViT(
        image_size=16,
        patch_size=4,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        mlp_dim=64,
        num_classes=5,
        **kwargs,
    )


def _loss_and_grads(model, images, training):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(model(images, training=training)))
    return loss, tape.gradient(loss, model.trainable_variables)


@pytest.mark.parametrize("semantics", ["timm", "official"])  # exact and tanh GELU
def test_fused_training_path_equals_unfused_inference_path(semantics):
    # Without dropout, training=True (LayerNorm, GELU and softmax as XLA
    # clusters) and training=False (plain ops) compute the same function.
    model = _small_vit(semantics=semantics)
    images = rng.uniform(-1, 1, (3, 16, 16, 3)).astype("float32")
    fused_loss, fused = _loss_and_grads(model, images, training=True)
    plain_loss, plain = _loss_and_grads(model, images, training=False)
    np.testing.assert_allclose(fused_loss, plain_loss, rtol=1e-5)
    assert len(fused) == len(plain) and all(g is not None for g in fused)
    for variable, a, b in zip(model.trainable_variables, fused, plain):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=variable.path)


def test_fused_layer_norm_matches_keras_layer_norm_and_its_gradients():
    # Ours in training (XLA cluster) and in inference (centred spelling) against
    # keras.layers.LayerNormalization with the same weights: outputs and gradients.
    local = np.random.default_rng(1)
    x = tf.constant(local.normal(2.0, 3.0, (4, 7, 24)).astype("float32"))
    gamma = local.normal(size=24).astype("float32")
    beta = local.normal(size=24).astype("float32")
    runs = []
    for norm, training in (
        (vit_layers.LayerNorm(epsilon=1e-6), True),
        (vit_layers.LayerNorm(epsilon=1e-6), False),
        (keras.layers.LayerNormalization(epsilon=1e-6), False),
    ):
        norm.build(x.shape)
        norm.set_weights([gamma, beta])
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = norm(x, training=training)
            loss = tf.reduce_sum(y * tf.range(24, dtype="float32"))
        runs.append((y, *tape.gradient(loss, [x, norm.gamma, norm.beta])))
    fused, plain, reference = runs
    for a, b in zip(fused, plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(plain, reference):  # other summation order: float32 rounding of the sums
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.abs(b).max()))


def _xla_marked(concrete_function):
    """Names of the functions in a traced graph that carry ``_XlaMustCompile``."""
    graph_def = concrete_function.graph.as_graph_def()
    return [
        f.signature.name
        for f in graph_def.library.function
        if f.attr.get("_XlaMustCompile") is not None and f.attr["_XlaMustCompile"].b
    ]


def test_inference_graphs_have_no_xla_clusters_training_graphs_do():
    # Exports trace the model in inference: they must run where XLA is off
    # (TF Serving's default, TFLite, ONNX). Training graphs get the clusters.
    model = _small_vit()
    spec = tf.TensorSpec((None, 16, 16, 3), tf.float32)
    inference = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    training = tf.function(lambda x: model(x, training=True)).get_concrete_function(spec)
    assert _xla_marked(inference) == []
    assert len(_xla_marked(training)) >= 3  # LayerNorm, GELU, softmax


def test_empty_batch_gives_empty_outputs():
    # The patch embedding is a reshape and a GEMM, so an empty batch stays empty
    # (a strided convolution returned its input unchanged for one).
    model = _small_vit()
    assert tuple(model(np.zeros((0, 16, 16, 3), "float32")).shape) == (0, 5)


#: Unit roundoff of bfloat16 (8 significant bits).
BF16_ROUNDOFF = 2.0**-8


@pytest.mark.parametrize("shape", [(5, 24), (2, 7, 24), (2, 3, 4, 24)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_onednn_layer_norm_spelling_computes_the_default_spelling(shape, dtype):
    # FusedBatchNormV3 over rows (the form oneDNN's remapper fuses) against
    # the centred Mean / Rsqrt spelling, both against a float64 LayerNorm of
    # the same input: same values, same dtype out. A bfloat16 input is not
    # cast to float32 in the oneDNN spelling; unfused (as here, where
    # Grappler may not fuse) it may round after the normalisation, the scale
    # (gamma, beta rounded too) and the offset, so its bound is those
    # roundings; the default spelling rounds once.
    from keras_vit.model.ops import layer_norm, spelled_for

    local = np.random.default_rng(2)
    x = tf.constant(local.normal(1.0, 2.0, shape).astype("float32"), dtype=dtype)
    gamma, beta = (local.normal(size=24).astype("float32") for _ in range(2))
    default = layer_norm(x, gamma, beta, 1e-6)
    with spelled_for("onednn"):
        fused = tf.function(lambda x: layer_norm(x, gamma, beta, 1e-6))(x)
    assert fused.dtype == default.dtype == x.dtype and fused.shape == shape
    values = np.asarray(tf.cast(x, "float64"))
    normalized = (values - values.mean(-1, keepdims=True)) / np.sqrt(
        values.var(-1, keepdims=True) + 1e-6
    )
    exact = normalized * gamma + beta
    if dtype == "float32":
        once = fused_bound = 1e-5
    else:
        once = BF16_ROUNDOFF * np.abs(exact) + 1e-6
        fused_bound = BF16_ROUNDOFF * (3 * np.abs(normalized * gamma) + np.abs(beta)) + once
    for result, bound in ((default, once), (fused, fused_bound)):
        error = np.abs(np.asarray(tf.cast(result, "float64")) - exact)
        assert np.all(error <= bound), float(np.max(error - bound))


@pytest.mark.parametrize("branch_dtype,dtype", [("float32", "float32"), ("bfloat16", "bfloat16")])
@pytest.mark.parametrize("kernels", [False, True])
def test_add_layer_norm_is_the_residual_sum_and_its_layer_norm(branch_dtype, dtype, kernels):
    # A float32 stream plus a branch (bf16 under mixed precision), and the
    # LayerNorm of that sum in `dtype`, against a float64 formula: by
    # TensorFlow's ops, and by one KerasVitAddLayerNorm with keras-vit's CPU
    # kernels in the graph (where a C++ compiler is here).
    import os
    import shutil

    from keras_vit.model.ops import add_layer_norm, spelled_for

    local = np.random.default_rng(4)
    stream = tf.constant(local.normal(1.0, 2.0, (2, 5, 24)).astype("float32"))
    branch = tf.constant(local.normal(0.0, 1.0, (2, 5, 24)).astype("float32"), dtype=branch_dtype)
    gamma, beta = (local.normal(size=24).astype("float32") for _ in range(2))
    library = None
    if kernels:
        if shutil.which(os.environ.get("CXX") or "c++") is None:
            pytest.skip("no C++ compiler on this machine")
        from keras_vit import kernels as native

        library = native.load()
    with spelled_for("onednn" if kernels else "default", kernels=library):
        step = tf.function(lambda s, b: add_layer_norm(s, b, gamma, beta, 1e-6, dtype))
        graph = step.get_concrete_function(stream, branch).graph.as_graph_def()
        total, normed = step(stream, branch)
    assert any(node.op == "KerasVitAddLayerNorm" for node in graph.node) == kernels
    assert total.dtype == tf.float32 and normed.dtype == dtype
    values = np.asarray(stream, "float64") + np.asarray(tf.cast(branch, "float64"))
    np.testing.assert_allclose(np.asarray(total), values, atol=1e-6)
    normalized = (values - values.mean(-1, keepdims=True)) / np.sqrt(
        values.var(-1, keepdims=True) + 1e-6
    )
    exact = normalized * gamma + beta
    bound = 1e-5 if dtype == "float32" else BF16_ROUNDOFF * np.abs(exact) + 1e-5
    error = np.abs(np.asarray(tf.cast(normed, "float64")) - exact)
    assert np.all(error <= bound), float(np.max(error - bound))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_onednn_softmax_spelling_is_the_float32_softmax_without_its_casts(dtype):
    # oneDNN's softmax kernel computes a bfloat16 input in float32 and rounds
    # once: the spelling without the casts gives the same bits.
    from keras_vit.model.ops import softmax_float32, spelled_for

    if not frozen.onednn_runs(dtype):
        pytest.skip(f"TensorFlow does not run {dtype} with oneDNN here")

    logits = tf.constant(
        np.random.default_rng(3).normal(0.0, 8.0, (2, 3, 17, 17)).astype("float32"), dtype
    )
    default = tf.function(softmax_float32)
    with spelled_for("onednn"):
        graph = tf.function(softmax_float32).get_concrete_function(logits).graph
        onednn = tf.function(softmax_float32)(logits)
    assert [op.type for op in graph.get_operations()].count("Cast") == 0
    assert onednn.dtype == logits.dtype
    np.testing.assert_array_equal(
        np.asarray(tf.cast(onednn, "float32")), np.asarray(tf.cast(default(logits), "float32"))
    )


def assert_is_affine_within_roundoff(result, x, kernel, bias):
    """``result`` is ``x @ kernel + bias`` in ``x``'s dtype, within its roundings.

    Against float64 sums of ``x`` and of ``kernel`` and ``bias`` rounded to
    ``x``'s dtype (as the GEMMs take them): at most 4 roundoffs of the sum of
    the absolute terms.
    """
    dtype = x.dtype
    values = np.asarray(tf.cast(x, "float64"))
    kernel = np.asarray(tf.cast(tf.cast(kernel, dtype), "float64"))
    bias = np.asarray(tf.cast(tf.cast(bias, dtype), "float64"))
    exact = values @ kernel + bias
    magnitude = np.abs(values) @ np.abs(kernel) + np.abs(bias)
    roundoff = BF16_ROUNDOFF if dtype == tf.bfloat16 else 2.0**-23
    assert result.dtype == dtype and tuple(result.shape) == exact.shape
    error = np.abs(np.asarray(tf.cast(result, "float64")) - exact)
    assert np.all(error <= 4 * roundoff * magnitude + 1e-6), float(np.max(error))


@pytest.mark.parametrize(
    "dtype, gemm, convolution",
    [
        ("bfloat16", "mlp_output", True),
        ("bfloat16", "attention_output", False),
        ("float32", "attention_output", True),
        ("float32", "mlp_output", False),
        ("bfloat16", "qkv", False),
        ("float32", "qkv", False),
    ],
)
def test_block_affine_is_a_1x1_convolution_where_onednn_runs_that_faster(dtype, gemm, convolution):
    # The GEMMs measured faster as oneDNN's 1x1 convolution (bf16 MLP
    # output, float32 attention output projection) are a Conv2D over
    # (1, n, 1, D) in the oneDNN spelling, the same sums as the MatMul's;
    # the others, and every GEMM in the default spelling, keep the MatMul.
    # Both against a float64 x @ kernel + bias, within the dtype's roundings
    # of the result (the rows a dynamic batch).
    from keras_vit.model.ops import block_affine, spelled_for

    local = np.random.default_rng(4)
    x = tf.constant(local.normal(size=(7, 48)).astype("float32"), dtype)
    kernel, bias = local.normal(size=(48, 16)).astype("float32"), local.normal(size=16)
    bias = bias.astype("float32")
    spec = tf.TensorSpec((None, 48), dtype)
    results, graphs = {}, {}
    for target in ("default", "onednn"):
        with spelled_for(target):
            function = tf.function(
                lambda x: block_affine(x, kernel, bias, gemm), input_signature=[spec]
            )
            graphs[target] = function.get_concrete_function().graph
        results[target] = function(x)
    op_types = {name: {op.type for op in graph.get_operations()} for name, graph in graphs.items()}
    assert "Conv2D" not in op_types["default"] and "MatMul" in op_types["default"]
    if convolution:
        assert "Conv2D" in op_types["onednn"] and "MatMul" not in op_types["onednn"]
    else:
        assert op_types["onednn"] == op_types["default"]
    for result in results.values():
        assert_is_affine_within_roundoff(result, x, kernel, bias)


def test_block_affine_refuses_an_unknown_gemm():
    from keras_vit.model.ops import block_affine

    with pytest.raises(ValueError, match="gemm must be one of .* got 'mlp_input'"):
        block_affine(np.ones((2, 3), "float32"), np.ones((3, 4)), np.zeros(4), "mlp_input")


@pytest.mark.parametrize(
    "dtype, batch_size, augmented",
    [
        ("bfloat16", 1, True),
        ("bfloat16", 16, False),
        ("bfloat16", None, False),
        ("float32", 1, False),
    ],
)
def test_block_affine_for_one_image_sums_the_bf16_qkv_bias_inside_a_bare_matmul(
    dtype, batch_size, augmented
):
    # Tuned for one image (spelled_for("onednn", batch_size=1)), the bf16 QKV
    # product is [x, 1] @ [kernel; bias]: one MatMul and no BiasAdd, which
    # TensorFlow runs as oneDNN's matmul kernel. Tuned for another batch size,
    # or in float32, it keeps the fused MatMul + BiasAdd. Against a float64
    # x @ kernel + bias within the dtype's roundings (the rows dynamic).
    from keras_vit.model.ops import block_affine, spelled_for

    local = np.random.default_rng(5)
    x = tf.constant(local.normal(size=(7, 48)).astype("float32"), dtype)
    kernel = local.normal(size=(48, 24)).astype("float32")
    bias = local.normal(size=24).astype("float32")
    with spelled_for("onednn", batch_size=batch_size):
        function = tf.function(
            lambda x: block_affine(x, kernel, bias, "qkv"),
            input_signature=[tf.TensorSpec((None, 48), dtype)],
        )
        graph = function.get_concrete_function().graph
    op_types = [op.type for op in graph.get_operations()]
    assert op_types.count("MatMul") == 1
    assert ("BiasAdd" not in op_types) == augmented
    assert ("ConcatV2" in op_types) == augmented
    assert_is_affine_within_roundoff(function(x), x, kernel, bias)


@pytest.mark.parametrize("batch_size", [0, 1.5, "1", True])
def test_spelled_for_refuses_a_batch_size_that_is_not_a_positive_int(batch_size):
    from keras_vit.model.ops import spelled_for

    with pytest.raises(ValueError, match="batch_size must be"):
        spelled_for("onednn", batch_size=batch_size).__enter__()


def test_onednn_spelling_is_refused_on_another_backend(monkeypatch):
    from keras_vit.model.ops import spelled_for

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="'onednn' spelling is TensorFlow's; Keras runs 'jax'"):
        spelled_for("onednn").__enter__()
    with pytest.raises(ValueError, match="target must be one of"):
        spelled_for("xla").__enter__()


def test_the_kernels_are_given_with_the_onednn_spelling_and_taken_for_their_dtypes():
    from keras_vit.model.ops import native_kernels, spelled_for

    library = object()  # stands for keras_vit.kernels.load()'s module
    with (
        pytest.raises(
            ValueError, match="CPU kernels go with the 'onednn' spelling; got 'openvino'"
        ),
        spelled_for("openvino", kernels=library),
    ):
        pass
    with spelled_for("onednn", kernels=library):
        assert native_kernels("float32", "layer_norm") is library
        assert native_kernels(tf.float32, "self_attention") is library
        assert native_kernels("bfloat16", "layer_norm") is library
        # bf16 attention keeps TensorFlow's ops (bf16 products)
        assert native_kernels(tf.bfloat16, "self_attention") is None
        assert native_kernels("float16", "layer_norm") is None
    assert native_kernels("float32", "layer_norm") is None  # outside the spelling
