"""``keras_vit.freeze``: in-process inference with the weights as graph constants.

Parity is against the fixtures' timm references (independent of keras-vit);
the graph checks read the traced function itself.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vit
from keras_vit import freeze, model_from_checkpoint
from keras_vit.model import frozen as frozen_module

from conftest import fixture_case

TOL = 1e-5
TINY = dict(patch_size=8, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32)


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b)))


def fixture_model(fixtures_dir, case="vit_token", filename="official.npz", **overrides):
    path = fixtures_dir / case / filename
    return model_from_checkpoint(path, num_heads=4, semantics="timm", **overrides)


def graph_ops(frozen):
    return [node.op for node in frozen.function.get_concrete_function().graph.as_graph_def().node]


@pytest.mark.parametrize(
    "case,filename",
    [
        ("vit_token", "official.npz"),
        ("hybrid", "timm.safetensors"),
        ("hf_vit", "model.safetensors"),
    ],
)
@pytest.mark.parametrize("jit_compile", [False, True])
def test_frozen_logits_match_the_reference(fixtures_dir, case, filename, jit_compile):
    _, ref = fixture_case(case)
    frozen = freeze(fixture_model(fixtures_dir, case, filename), jit_compile=jit_compile)
    assert frozen.jit_compile is jit_compile
    assert max_diff(frozen.predict(ref["inputs"], batch_size=2), ref["logits"]) <= TOL


def test_jit_compile_runs_the_call_as_one_xla_program(fixtures_dir):
    _, ref = fixture_case("vit_token")
    model = fixture_model(fixtures_dir)
    images = tf.constant(ref["inputs"][:1])
    hlo = freeze(model, jit_compile=True).function.experimental_get_compiler_ir(images)()
    assert hlo.count(" dot(") >= 4 * len(model.blocks)  # qkv, out, mlp x2 per block
    inputs = re.search(r"entry_computation_layout=\{\((.*?)\)->", hlo).group(1)
    assert inputs.count("[") == 1 and inputs.startswith("f32[1,")  # images; weights are literals
    with pytest.raises(ValueError, match="jit_compile"):  # the graph is not XLA's
        freeze(model, jit_compile=False).function.experimental_get_compiler_ir(images)()


@pytest.mark.parametrize("bf16_onednn,gpus,expected", [(False, [], True), (True, [], False)])
def test_auto_picks_xla_where_onednn_has_no_bfloat16(monkeypatch, bf16_onednn, gpus, expected):
    monkeypatch.setattr(frozen_module, "onednn_runs", lambda dtype="float32": bf16_onednn)
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: gpus)
    assert frozen_module.xla_is_faster_here() is expected
    assert freeze(tiny()).jit_compile is expected
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["GPU:0"])
    assert freeze(tiny()).jit_compile is False  # with a GPU the graph stays (not measured)
    assert not freeze(tiny()).native_kernels  # CPU ops: not between a GPU's


def test_weights_are_graph_constants_and_one_trace_serves_every_batch(fixtures_dir):
    _, ref = fixture_case("vit_token")
    model = fixture_model(fixtures_dir)
    frozen = freeze(model)
    concrete = frozen.function.get_concrete_function()
    assert len(concrete.captured_inputs) == 0  # no variable handles go in
    ops = graph_ops(frozen)
    assert "ReadVariableOp" not in ops and "VarHandleOp" not in ops
    assert ops.count("Const") >= len(model.weights)
    inputs = ref["inputs"]
    for batch in (1, len(inputs)):
        assert max_diff(frozen(inputs[:batch]), ref["logits"][:batch]) <= TOL
    assert frozen.function.experimental_get_tracing_count() == 1


def test_frozen_model_is_a_snapshot_of_the_weights(fixtures_dir):
    _, ref = fixture_case("vit_token")
    model = fixture_model(fixtures_dir)
    frozen = freeze(model)
    for weight in (model.head.kernel, model.head.bias):
        weight.assign(weight * 0.0)
    assert max_diff(model(ref["inputs"]), 0.0) <= TOL  # the model changed ...
    assert max_diff(frozen(ref["inputs"]), ref["logits"]) <= TOL  # ... the snapshot did not
    assert max_diff(freeze(model)(ref["inputs"]), 0.0) <= TOL  # freezing again sees it


def test_freeze_in_mixed_bfloat16_folds_the_casts_and_follows_float32(fixtures_dir):
    _, ref = fixture_case("vit_token")
    model = fixture_model(fixtures_dir)  # float32
    frozen = freeze(model, dtype="mixed_bfloat16")
    assert frozen.dtype_policy == "mixed_bfloat16"
    assert model.dtype_policy.name == "float32"  # the model itself is untouched
    matmuls = [
        node
        for node in frozen.function.get_concrete_function().graph.as_graph_def().node
        if node.op == "MatMul"
    ]
    assert any(node.attr["T"].type == tf.bfloat16.as_datatype_enum for node in matmuls)
    logits = np.asarray(frozen.predict(ref["inputs"]))
    scale = np.abs(ref["logits"]).max()
    assert max_diff(logits, ref["logits"]) <= 0.05 * scale
    assert max_diff(logits, ref["logits"]) > TOL  # really ran in bfloat16
    np.testing.assert_array_equal(logits.argmax(-1), ref["logits"].argmax(-1))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_dynamic_resolution_model_freezes_for_any_size(jit_compile):
    model = keras_vit.ViT(image_size=32, num_classes=3, dynamic_resolution=True, **TINY)
    frozen = freeze(model, jit_compile=jit_compile)
    assert tuple(frozen.input_spec.shape) == (None, None, None, 3)
    for size in (32, 48):
        images = np.random.default_rng(size).uniform(-1, 1, (2, size, size, 3)).astype("float32")
        assert max_diff(frozen(images), model(images)) <= TOL


def test_functional_keras_model_freezes():
    model = keras.applications.MobileNetV3Small(
        weights=None, input_shape=(64, 64, 3), include_preprocessing=False
    )
    images = np.random.default_rng(0).uniform(0, 1, (3, 64, 64, 3)).astype("float32")
    assert max_diff(freeze(model).predict(images), model.predict(images, verbose=0)) <= TOL


def tiny():
    return keras_vit.ViT(image_size=16, **TINY)


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda: freeze("ViT_B16"), TypeError, "freeze expects a keras.Model; got str"),
        (lambda: freeze(tiny(), dtype="float17"), ValueError, "got 'float17'"),
        (lambda: freeze(tiny(), jit_compile="yes"), ValueError, "True, False or 'auto'; got 'yes'"),
        (lambda: freeze(tiny(), jit_compile=np.ones(2)), ValueError, "True, False or 'auto'"),
        (lambda: freeze(tiny())(np.zeros((1, 32, 32, 3))), ValueError, "(any, 16, 16, 3)"),
        (lambda: freeze(tiny())(np.zeros((16, 16, 3))), ValueError, "got (16, 16, 3)"),
        (lambda: freeze(tiny()).predict(np.zeros((0, 16, 16, 3))), ValueError, "batch of images"),
        (lambda: freeze(tiny()).predict(np.zeros((1, 16, 16, 3)), 0), ValueError, "batch_size"),
        (lambda: freeze(tiny(), batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
        (lambda: freeze(tiny(), batch_size="8"), ValueError, "batch_size must be an int"),
        (
            lambda: freeze(tiny(), native_kernels="yes"),
            ValueError,
            "native_kernels must be True, False or 'auto'; got 'yes'",
        ),
        (
            lambda: freeze(tiny(), jit_compile=True, native_kernels=True),
            ValueError,
            "needs TensorFlow's oneDNN graph on a machine without a GPU",
        ),
        (
            lambda: freeze(tiny(), dtype="mixed_float16", jit_compile=False, native_kernels=True),
            ValueError,
            "(a float32 or bfloat16 compute dtype, jit_compile=False, oneDNN on); this graph",
        ),
    ],
)
def test_bad_inputs_are_refused_with_what_was_expected(call, error, message):
    with pytest.raises(error) as raised:
        call()
    assert message in str(raised.value)


def test_unbuilt_model_is_refused():
    class Unbuilt(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="is not built; build or call it"):
        freeze(Unbuilt())


def test_first_call_returns_the_freed_memory_once(monkeypatch):
    released = []
    monkeypatch.setattr(frozen_module, "release_memory", lambda: released.append(True))
    frozen = freeze(tiny())
    assert released == []  # tracing frees nothing: the graph is optimised at the first call
    images = np.zeros((2, 16, 16, 3), "float32")
    frozen(images)
    assert released == [True]
    frozen.predict(images, batch_size=1)
    assert released == [True]


def test_weights_over_the_graph_limit_are_refused(monkeypatch):
    model = tiny()
    state = model.trainable_variables + model.non_trainable_variables  # what becomes constants
    size = sum(np.asarray(v.numpy()).nbytes for v in state)
    monkeypatch.setattr(frozen_module, "MAX_CONSTANT_BYTES", size - 1)
    with pytest.raises(ValueError, match="GiB of weights; a frozen graph holds at most"):
        freeze(model)
    monkeypatch.setattr(frozen_module, "MAX_CONSTANT_BYTES", size)
    assert freeze(model).function.experimental_get_tracing_count() == 1


def executed_nodes(frozen):
    """``NodeDef``s that run for a call of the frozen function, as the runtime rewrote them.

    The function's graph is run once in a session that returns its
    partition graphs: after Grappler and after the oneDNN layout pass (which
    turns the fused ops into ``_Mkl...`` kernels), as TensorFlow's own
    remapper tests read them.
    """
    concrete = frozen.function.get_concrete_function()
    images = np.zeros((2, *frozen.input_spec.shape[1:]), "float32")
    metadata = tf.compat.v1.RunMetadata()
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(concrete.graph.as_graph_def(), name="")
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(
                [output.name for output in concrete.outputs],
                {concrete.inputs[0].name: images},
                options=tf.compat.v1.RunOptions(output_partition_graphs=True),
                run_metadata=metadata,
            )
    return [node for partition in metadata.partition_graphs for node in partition.node]


def executed_ops(frozen):
    return [node.op for node in executed_nodes(frozen)]


def with_onednn(*dtypes):
    """``dtypes`` (policy names; None: the model's float32) as parameters, each skipped
    where TensorFlow's oneDNN does not run its compute dtype."""
    params = []
    for dtype in dtypes:
        compute = keras.DTypePolicy(dtype or "float32").compute_dtype
        runs = frozen_module.onednn_runs(compute)
        reason = f"TensorFlow does not run {compute} with oneDNN here"
        params.append(pytest.param(dtype, marks=pytest.mark.skipif(not runs, reason=reason)))
    return params


@pytest.mark.parametrize("dtype", with_onednn(None, "bfloat16"))
def test_with_onednn_each_layer_norm_is_one_onednn_kernel(fixtures_dir, monkeypatch, dtype):
    # A checkpoint's LayerNorms (gamma != 1, beta != 0; two per block and the
    # encoder's last) each run as one _MklLayerNorm, where the default
    # spelling leaves its Mean / Sub / Square / Rsqrt ops. In bfloat16 the
    # kernel takes the bfloat16 stream as it is: no cast but the input's
    # and the logits'.
    from keras_vit.model.layers import LayerNorm

    model = fixture_model(fixtures_dir)
    norms = sum(isinstance(layer, LayerNorm) for layer in model._flatten_layers())
    assert norms >= 3
    ops = executed_ops(freeze(model, dtype=dtype, jit_compile=False, native_kernels=False))
    assert ops.count("_MklLayerNorm") == norms
    assert "Rsqrt" not in ops and "FusedBatchNormV3" not in ops
    if dtype == "bfloat16":
        assert ops.count("Cast") == 2
    monkeypatch.setattr(frozen_module, "onednn_runs", lambda dtype="float32": False)
    default = executed_ops(freeze(model, dtype=dtype, jit_compile=False, native_kernels=False))
    assert "_MklLayerNorm" not in default and default.count("Rsqrt") == norms


@pytest.mark.parametrize("dtype", with_onednn(None, "bfloat16", "mixed_bfloat16"))
def test_with_onednn_each_residual_add_is_fused_into_its_gemm(fixtures_dir, dtype):
    # Both residual adds of each block run inside the GEMM before them
    # (oneDNN's MatMul + BiasAdd + Add), and with a dynamic batch no shape
    # arithmetic per block. The last block computes the class token's row
    # only (ViT.head_outputs): Grappler does not prove its sliced stream the
    # same shape as the output projection's rows, so that add, of one row
    # per image, stays an AddV2 beside the position embedding's. Each
    # block's MLP output GEMM in bf16, and attention output projection in
    # float32, is a 1x1 convolution with its bias (ops.block_affine), its
    # residual add an AddV2. Under mixed_bfloat16 the float32 stream is
    # added to a cast of the bf16 branch, so those adds stay. (TensorFlow's
    # own ops: keras-vit's CPU kernels take the adds that stay AddV2s before
    # a LayerNorm, see test_with_the_kernels_each_layer_norm_...)
    from keras_vit.model.blocks import TransformerBlock

    model = fixture_model(fixtures_dir)
    blocks = sum(isinstance(layer, TransformerBlock) for layer in model._flatten_layers())
    assert blocks >= 2
    nodes = executed_nodes(freeze(model, dtype=dtype, jit_compile=False, native_kernels=False))
    ops = [node.op for node in nodes]
    fused_adds = [
        node
        for node in nodes
        if node.op == "_MklNativeFusedMatMul"
        and list(node.attr["fused_ops"].list.s) == [b"BiasAdd", b"Add"]
    ]
    convolutions = [
        node
        for node in nodes
        if node.op == "_MklNativeFusedConv2D"
        and list(node.attr["fused_ops"].list.s) == [b"BiasAdd"]
    ]
    if dtype == "mixed_bfloat16":
        assert not fused_adds and ops.count("AddV2") == 2 * blocks + 1
    elif dtype == "bfloat16":  # the MLPs' adds apart
        assert len(fused_adds) == blocks - 1 and ops.count("AddV2") == 2 + blocks
    else:  # float32: the attention's adds apart (the last block's was)
        assert len(fused_adds) == blocks and ops.count("AddV2") == 1 + blocks
    assert "AddN" not in ops
    assert len(convolutions) == blocks
    assert ops.count("Pack") <= 1  # the class token's broadcast to the batch


@pytest.mark.parametrize("dtype", with_onednn("bfloat16", "mixed_bfloat16"))
def test_frozen_for_one_image_runs_each_bf16_qkv_product_as_a_bare_matmul(fixtures_dir, dtype):
    # freeze(batch_size=1): each QKV product (every block's, and the last
    # block's query and key/value products) is one MatMul of the tokens
    # with a column of ones appended, no bias op fused (oneDNN's matmul
    # kernel); tuned for batches it is a MatMul fused with its BiasAdd. The
    # graph still takes any batch size, with the numbers of the batch-tuned
    # graph up to bf16 roundings, and follows timm's logits.
    from keras_vit.model.blocks import TransformerBlock

    _, ref = fixture_case("vit_token")
    model = fixture_model(fixtures_dir)
    blocks = sum(isinstance(layer, TransformerBlock) for layer in model._flatten_layers())
    tuned = {
        size: freeze(model, dtype=dtype, jit_compile=False, batch_size=size) for size in (None, 1)
    }
    assert tuned[1].batch_size == 1 and tuned[None].batch_size is None

    def products_of_ones(frozen):
        nodes = executed_nodes(frozen)
        concatenations = {node.name for node in nodes if node.op.endswith("ConcatV2")}
        return [
            node
            for node in nodes
            if node.op.endswith("MatMul") and node.input[0].split(":")[0] in concatenations
        ]

    assert len(products_of_ones(tuned[1])) == blocks + 1
    assert not products_of_ones(tuned[None])
    logits = {size: np.asarray(frozen(ref["inputs"]), "float32") for size, frozen in tuned.items()}
    assert len(ref["inputs"]) > 1
    scale = np.abs(ref["logits"]).max()
    assert max_diff(logits[1], logits[None]) <= 0.01 * scale
    assert max_diff(logits[1], ref["logits"]) <= 0.05 * scale
    np.testing.assert_array_equal(logits[1].argmax(-1), ref["logits"].argmax(-1))
    np.testing.assert_array_equal(tuned[1].predict(ref["inputs"]), logits[1])


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("dtype", ["mixed_bfloat16", "bfloat16"])
def test_frozen_bfloat16_follows_the_reference_and_the_model_in_its_policy(
    fixtures_dir, dtype, jit_compile
):
    # The frozen call (oneDNN's spelling where TensorFlow's graph runs it, or
    # XLA) against timm's float32 logits and the checkpoint loaded in that
    # policy, unfrozen. The graph runs the model's own bf16 arithmetic; XLA
    # may keep float32 between ops where the graph rounds to bf16 (its
    # default "excess precision"), so it stays in the reference's bf16 band
    # without following the model's roundings.
    _, ref = fixture_case("vit_token")
    model = fixture_model(fixtures_dir)
    frozen = freeze(model, dtype=dtype, jit_compile=jit_compile)
    logits = np.asarray(frozen.predict(ref["inputs"]), dtype="float32")
    unfrozen = fixture_model(fixtures_dir, dtype=dtype)
    own = np.asarray(unfrozen.predict(ref["inputs"], verbose=0), dtype="float32")
    scale = np.abs(ref["logits"]).max()
    assert max_diff(logits, ref["logits"]) <= 0.05 * scale
    assert max_diff(logits, ref["logits"]) > TOL  # really ran in bfloat16
    assert max_diff(logits, own) <= (0.05 if jit_compile else 0.01) * scale
    np.testing.assert_array_equal(logits.argmax(-1), ref["logits"].argmax(-1))


def with_kernels():
    """Skips where TensorFlow's oneDNN does not run float32 or no C++ compiler is here."""
    import os
    import shutil

    if not frozen_module.onednn_runs("float32"):
        pytest.skip("TensorFlow does not run float32 with oneDNN here")
    if shutil.which(os.environ.get("CXX") or "c++") is None:
        pytest.skip("no C++ compiler on this machine")


@pytest.mark.parametrize(
    "case,filename",
    [
        ("vit_token", "official.npz"),
        ("hybrid", "timm.safetensors"),
        ("hf_vit", "model.safetensors"),
    ],
)
def test_frozen_with_the_kernels_matches_the_reference(fixtures_dir, case, filename):
    with_kernels()
    _, ref = fixture_case(case)
    frozen = freeze(fixture_model(fixtures_dir, case, filename), native_kernels=True)
    assert frozen.native_kernels and not frozen.jit_compile
    assert max_diff(frozen.predict(ref["inputs"], batch_size=2), ref["logits"]) <= TOL


@pytest.mark.parametrize(
    "case,filename,overrides",
    [
        ("deit_distilled", "timm.safetensors", {}),
        ("vit_registers_layerscale", "timm.safetensors", {}),
        ("vit_map_head", "big_vision.npz", {}),
        ("vit_sincos_gap", "big_vision.npz", {"image_size": 32}),
        ("vit_fc_norm", "timm.safetensors", {}),
    ],
)
def test_frozen_with_the_kernels_matches_the_family_references(
    fixtures_dir, case, filename, overrides
):
    # Prefix tokens (distillation, registers), LayerScale, a MAP head (its
    # probe's attention keeps TensorFlow's ops) and pooled heads (every
    # block's attention runs in the kernel), against timm's logits.
    with_kernels()
    _, ref = fixture_case(case)
    model = model_from_checkpoint(fixtures_dir / case / filename, num_heads=4, **overrides)
    if case == "deit_distilled":  # inference averages the two heads
        expected = (ref["logits_cls"] + ref["logits_dist"]) / 2
    else:
        expected = ref["logits"]
    frozen = freeze(model, native_kernels=True)
    assert frozen.native_kernels
    assert max_diff(frozen.predict(ref["inputs"], batch_size=2), expected) <= TOL


def test_with_the_kernels_each_layer_norm_and_self_attention_is_one_op(fixtures_dir):
    # Every LayerNorm is one KerasVitLayerNorm, but each block's second: the
    # attention's residual add (an AddV2 after the output projection's 1x1
    # convolution in TensorFlow's graph) and that LayerNorm are one
    # KerasVitAddLayerNorm, leaving the position embedding's add the one
    # AddV2. Every block's self-attention is one KerasVitSelfAttention, fed
    # the QKV GEMM's output without a transpose, but the last block's: it
    # attends from the class token only (ViT.head_outputs) and keeps
    # TensorFlow's ops.
    from keras_vit.model.blocks import TransformerBlock
    from keras_vit.model.layers import LayerNorm

    with_kernels()
    model = fixture_model(fixtures_dir)
    layers = list(model._flatten_layers())
    norms = sum(isinstance(layer, LayerNorm) for layer in layers)
    blocks = sum(isinstance(layer, TransformerBlock) for layer in layers)
    ops = executed_ops(freeze(model, native_kernels=True))
    assert ops.count("KerasVitLayerNorm") == norms - blocks and "_MklLayerNorm" not in ops
    assert ops.count("KerasVitAddLayerNorm") == blocks and ops.count("AddV2") == 1
    assert ops.count("KerasVitSelfAttention") == blocks - 1
    assert ops.count("Softmax") + ops.count("_MklSoftmax") == 1
    default = executed_ops(freeze(model, native_kernels=False))
    assert "KerasVitLayerNorm" not in default and "KerasVitSelfAttention" not in default

    def transposes(ops):
        return ops.count("Transpose") + ops.count("_MklTranspose")

    # two a block without the kernel: the QKV output to head-major and back
    assert transposes(ops) == transposes(default) - 2 * (blocks - 1)


@pytest.mark.parametrize("dtype", with_onednn("bfloat16", "mixed_bfloat16"))
def test_in_bfloat16_the_kernels_run_each_layer_norm_and_follow_the_reference(fixtures_dir, dtype):
    # In bf16 every LayerNorm is one KerasVitLayerNorm, statistics, scale and
    # offset in float32 and one rounding; the attention keeps TensorFlow's
    # bf16 ops (no KerasVitSelfAttention). Under mixed_bfloat16 the float32
    # stream is normalised straight to bf16 (no cast after a LayerNorm), and
    # each block's attention branch is cast, added and normalised by one
    # KerasVitAddLayerNorm: one cast a block is left (the MLP branch's)
    # where TensorFlow's graph has four. The logits stay in the bf16 band
    # of timm's float32 reference, and within bf16 roundings of the same
    # graph with TensorFlow's _MklLayerNorm.
    from keras_vit.model.blocks import TransformerBlock
    from keras_vit.model.layers import LayerNorm

    with_kernels()
    _, ref = fixture_case("vit_token")
    model = fixture_model(fixtures_dir)
    layers = list(model._flatten_layers())
    norms = sum(isinstance(layer, LayerNorm) for layer in layers)
    blocks = sum(isinstance(layer, TransformerBlock) for layer in layers)
    frozen = freeze(model, dtype=dtype, native_kernels=True)
    assert frozen.native_kernels
    ops = executed_ops(frozen)
    default = executed_ops(freeze(model, dtype=dtype, native_kernels=False))
    assert "_MklLayerNorm" not in ops and "KerasVitSelfAttention" not in ops
    if dtype == "mixed_bfloat16":
        assert ops.count("KerasVitLayerNorm") == norms - blocks
        assert ops.count("KerasVitAddLayerNorm") == blocks
        assert ops.count("Cast") == blocks + 2 and default.count("Cast") == 4 * blocks + 2
    else:  # the bf16 stream: the attention's add is in its output GEMM
        assert ops.count("KerasVitLayerNorm") == norms and "KerasVitAddLayerNorm" not in ops
    logits = np.asarray(frozen.predict(ref["inputs"]), dtype="float32")
    tfops = freeze(model, dtype=dtype, native_kernels=False)
    own = np.asarray(tfops.predict(ref["inputs"]), dtype="float32")
    scale = np.abs(ref["logits"]).max()
    assert max_diff(logits, ref["logits"]) <= 0.05 * scale
    assert max_diff(logits, ref["logits"]) > TOL  # really ran in bfloat16
    assert max_diff(logits, own) <= 0.01 * scale
    np.testing.assert_array_equal(logits.argmax(-1), ref["logits"].argmax(-1))


def test_auto_uses_the_kernels_where_they_build_and_falls_back_where_not(
    fixtures_dir, monkeypatch, caplog
):
    import logging

    from keras_vit.kernels import KernelBuildError, library

    with_kernels()
    _, ref = fixture_case("vit_token")
    model = fixture_model(fixtures_dir)
    assert freeze(model).native_kernels  # the default is "auto"
    assert not freeze(model, jit_compile=True).native_kernels
    assert not freeze(model, dtype="mixed_float16", jit_compile=False).native_kernels
    monkeypatch.setenv("CXX", "no-such-compiler-keras-vit")
    monkeypatch.setattr(library, "_LOADED", {})
    with caplog.at_level(logging.INFO, logger="keras_vit"):
        fallback = freeze(model)
    assert not fallback.native_kernels
    assert "'no-such-compiler-keras-vit' is not on PATH" in caplog.text
    assert max_diff(fallback.predict(ref["inputs"], batch_size=2), ref["logits"]) <= TOL
    with pytest.raises(KernelBuildError, match="not on PATH"):
        freeze(model, native_kernels=True)
