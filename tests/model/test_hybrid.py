"""Hybrid ViTs: the BiT ResNet stem, its numerics against timm, and the model around it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vit
from keras_vit import load_weights
from keras_vit.model.resnet import ResNetStem, StdConv2D

from conftest import fixture_case

SMALL_HYBRID = dict(
    image_size=64,
    patch_size=1,
    hidden_size=48,
    num_layers=2,
    num_heads=4,
    mlp_dim=192,
    num_classes=10,
    resnet_layers=(1, 1),
    resnet_width=32,
)


def fixture_model(fixtures_dir, checkpoint="official.npz", **overrides):
    """The small hybrid with the fixture's weights, read by the project's loader."""
    model = keras_vit.ViT(**{**SMALL_HYBRID, **overrides})
    load_weights(model, fixtures_dir / "hybrid" / checkpoint)
    return model


def test_fixture_config_is_the_small_hybrid():
    config, _ = fixture_case("hybrid")
    assert tuple(config["image_size"]) == (SMALL_HYBRID["image_size"],) * 2
    assert tuple(config["resnet"]["layers"]) == SMALL_HYBRID["resnet_layers"]
    assert config["resnet"]["width"] == SMALL_HYBRID["resnet_width"]
    assert keras_vit.ViT(**SMALL_HYBRID).count_params() == config["params"]


@pytest.mark.parametrize("checkpoint", ["official.npz", "timm.safetensors"])
@pytest.mark.parametrize(
    "semantics, reference", [("timm", "logits"), ("official", "logits_official_semantics")]
)
def test_fixture_logits_match_timm_for_both_semantics(
    fixtures_dir, checkpoint, semantics, reference
):
    _, ref = fixture_case("hybrid")
    model = fixture_model(fixtures_dir, checkpoint, semantics=semantics)
    out = model.forward_intermediates(ref["inputs"])
    np.testing.assert_allclose(out["logits"], ref[reference], atol=1e-5, rtol=0)
    if semantics == "timm":
        np.testing.assert_allclose(out["pooled"], ref["features"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(out["encoded"], ref["tokens"], atol=1e-5, rtol=0)
    assert tuple(out["stem"].shape) == (4, 8, 8, 256)


def test_stem_variable_paths_mirror_the_official_checkpoint():
    model = keras_vit.ViT(**SMALL_HYBRID)
    paths = {v.path for v in model.stem.weights}
    assert {
        "vit/resnet/conv_root/kernel",
        "vit/resnet/gn_root/gamma",
        "vit/resnet/gn_root/beta",
        "vit/resnet/block1/unit1/conv1/kernel",
        "vit/resnet/block1/unit1/gn3/gamma",
        "vit/resnet/block1/unit1/conv_proj/kernel",
        "vit/resnet/block2/unit1/gn_proj/beta",
    } <= paths
    assert len(paths) == 3 + 2 * 12


def test_weight_standardisation_formulas_of_both_semantics():
    # Per output channel: std 1e-5 -> official w / (std + 1e-5) halves it;
    # timm w / sqrt(var + 1e-8) scales it by about 0.0995.
    signs = np.where(np.arange(3 * 3 * 2) % 2, 1.0, -1.0).reshape(3, 3, 2, 1)
    kernel = (1e-3 + 1e-5 * signs).astype("float32")
    expected = {"official": 0.5, "timm": 1e-5 / np.sqrt(1e-10 + 1e-8)}
    for semantics, scale in expected.items():
        conv = StdConv2D(1, 3, semantics=semantics)
        conv.build((None, 5, 5, 2))
        conv.kernel.assign(kernel)
        np.testing.assert_allclose(conv.standardized_kernel(), scale * signs, rtol=1e-3)


@pytest.mark.parametrize("size", [64, 65, 37])
def test_stem_output_shape_is_ceil_of_same_padding(size):
    stem = ResNetStem(layers=(1, 1), width=32)
    images = np.zeros((1, size, size, 3), "float32")
    out_shape = stem.compute_output_shape(images.shape)
    assert tuple(stem(images).shape) == out_shape
    assert out_shape == (1, -(-size // 8), -(-size // 8), 256)


@pytest.mark.parametrize(
    "layers, stride, features", [((), 4, 64), ((2, 2, 2, 2), 32, 2048), ((3, 4, 9), 16, 1024)]
)
def test_stem_stride_and_features(layers, stride, features):
    stem = ResNetStem(layers=layers, width=64)
    assert (stem.stride, stem.features) == (stride, features)
    assert stem.compute_output_shape((None, 224, 224, 3)) == (
        None,
        224 // stride,
        224 // stride,
        features,
    )


def test_std_conv_and_stem_config_round_trip():
    images = np.random.default_rng(0).uniform(-1, 1, (2, 24, 24, 3)).astype("float32")
    for layer in (
        StdConv2D(8, 3, strides=2, semantics="official", name="conv"),
        ResNetStem(layers=(1, 2), width=32, semantics="official", name="resnet"),
    ):
        expected = layer(images)
        config = layer.get_config()
        clone = layer.__class__.from_config(config)
        clone.build(images.shape)
        clone.set_weights(layer.get_weights())
        assert clone.get_config() == config
        np.testing.assert_array_equal(clone(images), expected)
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert isinstance(restored, layer.__class__)


def test_keras_file_round_trip_in_safe_mode(fixtures_dir, tmp_path):
    _, ref = fixture_case("hybrid")
    model = fixture_model(fixtures_dir)
    model.save(tmp_path / "hybrid.keras")
    restored = keras.saving.load_model(tmp_path / "hybrid.keras", safe_mode=True)
    assert isinstance(restored.stem, ResNetStem)
    np.testing.assert_array_equal(restored(ref["inputs"]), model(ref["inputs"]))
    np.testing.assert_allclose(restored(ref["inputs"]), ref["logits"], atol=1e-5, rtol=0)


def test_mixed_bfloat16_forward_stays_close_to_float32(fixtures_dir):
    _, ref = fixture_case("hybrid")
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = fixture_model(fixtures_dir)
    out = model.forward_intermediates(ref["inputs"])
    assert model.stem.conv_root.kernel.dtype == "float32"
    assert model.stem.gn_root.gamma.dtype == "float32"
    assert out["stem"].dtype == "bfloat16"
    assert out["logits"].dtype == "float32"
    # bf16 keeps about 3 significant digits; the logits reach 2.5.
    np.testing.assert_allclose(out["logits"], ref["logits"], atol=0.1, rtol=0)


def test_other_image_size_gives_the_feature_map_grid():
    model = keras_vit.ViT(**{**SMALL_HYBRID, "image_size": (96, 128)})
    assert model.grid_size == (12, 16)
    assert model.position_embedding.pos_embedding.shape == (1, 1 + 12 * 16, 48)
    images = np.zeros((1, 96, 128, 3), "float32")
    assert tuple(model.forward_intermediates(images)["stem"].shape) == (1, 12, 16, 256)


def test_dynamic_resolution_runs_on_other_sizes_and_matches_at_native_size(fixtures_dir):
    _, ref = fixture_case("hybrid")
    static = fixture_model(fixtures_dir)
    dynamic = keras_vit.ViT(**SMALL_HYBRID, dynamic_resolution=True)
    dynamic.set_weights(static.get_weights())
    np.testing.assert_allclose(dynamic(ref["inputs"]), ref["logits"], atol=1e-5, rtol=0)
    images = np.zeros((2, 96, 80, 3), "float32")
    out = dynamic.forward_intermediates(images)
    assert tuple(out["with_posemb"].shape) == (2, 1 + 12 * 10, 48)
    assert tuple(out["logits"].shape) == (2, 10)


def test_hybrid_factories_exist():
    for name in ("R_ViT_Ti16", "R26_ViT_S32", "R26_ViT_B32", "R50_ViT_B16", "R50_ViT_L32"):
        assert callable(getattr(keras_vit, name))
    model = keras_vit.R_ViT_Ti16(image_size=64, num_classes=3)
    assert (model.stem.stride, model.grid_size, model.stem.stages) == (4, (2, 2), [])


def test_image_size_not_divisible_by_the_total_stride():
    with pytest.raises(ValueError, match="total stride"):
        keras_vit.ViT(**{**SMALL_HYBRID, "image_size": 60})
    with pytest.raises(ValueError, match="not divisible"):
        keras_vit.R26_ViT_S32(image_size=208)  # stride 32
    dynamic = keras_vit.ViT(**SMALL_HYBRID, dynamic_resolution=True)
    with pytest.raises(ValueError, match="not divisible"):
        dynamic(np.zeros((1, 68, 64, 3), "float32"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layers=(1, 0)), "layers must be a tuple of positive ints"),
        (dict(layers=3), "layers must be a tuple of positive ints"),
        (dict(width=48), "multiple of 32"),
        (dict(semantics="jax"), "semantics must be one of"),
    ],
)
def test_stem_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNetStem(**kwargs)


def test_stem_rejects_non_image_input():
    with pytest.raises(ValueError, match="rank 4"):
        ResNetStem(layers=(), width=32).build((None, 64, 3))
    with pytest.raises(ValueError, match="filters must be a positive int"):
        StdConv2D(0, 3)


def test_gradients_reach_every_stem_weight(fixtures_dir):
    _, ref = fixture_case("hybrid")
    model = fixture_model(fixtures_dir)
    with tf.GradientTape() as tape:
        loss = keras.ops.mean(keras.ops.square(model(ref["inputs"], training=True)))
    grads = tape.gradient(loss, model.stem.trainable_weights)
    for variable, grad in zip(model.stem.trainable_weights, grads):
        assert grad is not None and np.all(np.isfinite(grad)), variable.path
        assert np.any(grad.numpy() != 0), variable.path


def test_timm_root_only_stem_names_are_read(tmp_path):
    """timm's R+Ti/16 stem is its bare stem module: ``patch_embed.backbone.conv`` / ``.norm``."""
    from safetensors.numpy import save_file

    from keras_vit.weights.writers import checkpoint_tensors

    model = keras_vit.ViT(
        image_size=32, patch_size=2, hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64,
        num_classes=3, resnet_layers=(), resnet_width=32,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    tensors = {
        name.replace("backbone.stem.", "backbone."): value
        for name, value in checkpoint_tensors(model, "timm").items()
    }
    assert "patch_embed.backbone.conv.weight" in tensors
    save_file(tensors, str(tmp_path / "r_ti.safetensors"))
    loaded = keras_vit.model_from_checkpoint(tmp_path / "r_ti.safetensors", num_heads=2)
    assert loaded.resnet_layers == ()
    x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-5)
