"""The ViT model: shapes, factories, serialisation, training, errors."""

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.model import variants

TINY = dict(image_size=32, patch_size=8, hidden_size=48, num_layers=2, num_heads=4, mlp_dim=96)


def tiny(**overrides):
    return keras_vit.ViT(**{**TINY, "num_classes": 10, **overrides})


def images(batch=2, size=32, channels=3):
    return np.random.default_rng(0).uniform(-1, 1, (batch, size, size, channels)).astype("float32")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (dict(), (2, 10)),
        (dict(classifier="gap"), (2, 10)),
        (dict(include_top=False), (2, 48)),
        (dict(include_top=False, classifier="gap"), (2, 48)),
        (dict(representation_size=24), (2, 10)),
        (dict(representation_size=24, include_top=False), (2, 24)),
        (dict(classifier="unpooled", include_top=False), (2, 17, 48)),
    ],
)
def test_output_shapes_for_every_classifier_mode(overrides, expected):
    model = tiny(**overrides)
    assert tuple(model(images()).shape) == expected
    assert model.compute_output_shape((2, 32, 32, 3)) == expected


def test_gap_has_no_class_token_and_token_has_one():
    assert tiny(classifier="gap").position_embedding.pos_embedding.shape == (1, 16, 48)
    assert tiny().position_embedding.pos_embedding.shape == (1, 17, 48)


def test_gap_pools_the_mean_of_all_encoded_tokens():
    model = tiny(classifier="gap", include_top=False)
    out = model.forward_intermediates(images())
    np.testing.assert_allclose(out["pooled"], np.mean(out["encoded"], axis=1), atol=1e-6)


def test_head_is_zero_initialised_as_in_the_official_code():
    model = tiny()
    assert not np.any(model.head.kernel.numpy())
    assert not np.any(model.head.bias.numpy())
    assert not np.any(model.class_token.cls.numpy())
    assert 0.01 < np.std(model.position_embedding.pos_embedding.numpy()) < 0.03


def test_grayscale_input():
    model = tiny(channels=1)
    assert tuple(model(images(channels=1)).shape) == (2, 10)


def test_non_square_images():
    model = tiny(image_size=(32, 48))
    assert model.grid_size == (4, 6)
    assert tuple(model(np.zeros((1, 32, 48, 3), "float32")).shape) == (1, 10)


def test_classifier_activation_softmax_sums_to_one():
    model = tiny(classifier_activation="softmax")
    model.head.kernel.assign(np.random.default_rng(1).normal(size=(48, 10)))
    probs = model(images()).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_intermediates_are_named_and_shaped():
    model = tiny()
    out = model.forward_intermediates(images(), return_attention=True)
    assert out["patches"].shape == (2, 16, 48)
    assert out["with_posemb"].shape == (2, 17, 48)
    assert out["block_1"].shape == (2, 17, 48)
    assert out["attention_0"].shape == (2, 4, 17, 17)
    np.testing.assert_allclose(np.sum(out["attention_0"], axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["logits"], model(images()), atol=1e-6)


def test_dynamic_resolution_matches_static_model_at_native_size():
    static = tiny()
    dynamic = tiny(dynamic_resolution=True)
    dynamic.set_weights(static.get_weights())
    static.head.kernel.assign(np.ones((48, 10)) * 0.1)
    dynamic.head.kernel.assign(np.ones((48, 10)) * 0.1)
    np.testing.assert_allclose(dynamic(images()), static(images()), atol=1e-5)
    assert tuple(dynamic(images(size=48)).shape) == (2, 10)


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    model = tiny(representation_size=24, classifier_activation="softmax", drop_path_rate=0.1)
    model.head.kernel.assign(np.random.default_rng(2).normal(size=(24, 10)))
    path = tmp_path / "vit.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, keras_vit.ViT)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded(images()), model(images()))


def test_weights_file_round_trip_through_factory(tmp_path):
    model = keras_vit.ViT_Ti16(image_size=32, num_classes=3, num_layers=1)
    path = tmp_path / "ti.weights.h5"
    model.save_weights(path)
    again = keras_vit.ViT_Ti16(image_size=32, num_classes=3, num_layers=1, weights=path)
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_gradients_reach_every_weight():
    model = tiny(representation_size=24)
    # The zero-initialised head would block gradients to everything below it.
    model.head.kernel.assign(np.random.default_rng(3).normal(size=(24, 10)))
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = keras.ops.sum(model(images(), training=True) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    for var, grad in zip(model.trainable_variables, grads):
        assert grad is not None, var.path
        assert np.any(grad.numpy() != 0), var.path


def test_fit_reduces_the_loss():
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (32, 32, 32, 3)).astype("float32")
    y = (x[:, :16].mean(axis=(1, 2, 3)) > x[:, 16:].mean(axis=(1, 2, 3))).astype("int32")
    model = tiny(num_classes=2)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_mixed_precision_forward_and_training_step():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = tiny()
    assert model.blocks[0].compute_dtype == "bfloat16"
    assert model.head.compute_dtype == "float32"
    out = model.forward_intermediates(images(), return_attention=True)
    assert out["logits"].dtype == "float32"
    assert out["attention_0"].dtype == "float32"
    # GEMM operands in bfloat16; the residual stream and what reads it in float32.
    assert out["patches"].dtype == "bfloat16"
    assert model.blocks[0].mlp.dense_0.compute_dtype == "bfloat16"
    for stage in ("with_posemb", "block_0", "block_1", "encoded"):
        assert out[stage].dtype == "float32", stage
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(images(4), np.array([0, 1, 2, 3]))
    assert np.isfinite(loss)
    changed = [np.any(b != w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert any(changed)
    assert all(w.dtype == "float32" for w in model.trainable_weights)


@pytest.mark.parametrize("name", list(variants.VARIANTS))
def test_every_variant_has_a_factory(name):
    factory = getattr(keras_vit, variants.factory_name(name))
    assert name in factory.__doc__ and factory.variant == name
    assert keras_vit.FACTORIES[variants.factory_name(name)] is factory


def test_the_factories_are_exactly_the_table():
    assert list(keras_vit.FACTORIES) == [variants.factory_name(v) for v in variants.VARIANTS]
    assert set(keras_vit.FACTORIES) <= set(keras_vit.__all__)


def test_from_variant_and_factory_build_the_same_config():
    a = keras_vit.ViT.from_variant("S/32", image_size=64, num_classes=5, num_layers=1)
    b = keras_vit.ViT_S32(image_size=64, num_classes=5, num_layers=1)
    assert a.get_config() == b.get_config()
    assert (a.hidden_size, a.num_heads, a.mlp_dim, a.patch_size) == (384, 6, 1536, (32, 32))


def test_factory_keras_applications_arguments():
    model = keras_vit.ViT_Ti16(input_shape=(64, 32, 1), classes=7, num_layers=1)
    assert model.image_size == (64, 32)
    assert model.channels == 1
    assert model.num_classes == 7


def test_ti16_parameter_count_is_official():
    assert keras_vit.ViT_Ti16().count_params() == 5_717_416


# ----------------------------------------------------------------------------
# Errors: each names what was expected and what was given.


def test_image_size_not_divisible_by_patch_size():
    with pytest.raises(ValueError, match=r"height 30 is not divisible by the patch size 8"):
        tiny(image_size=30)


def test_wrong_channel_count_at_call_time():
    with pytest.raises(ValueError, match=r"expects 3 input channel\(s\); got 1"):
        tiny()(images(channels=1))


def test_wrong_spatial_size_at_call_time():
    with pytest.raises(ValueError, match=r"built for 32x32 images; got 48x48"):
        tiny()(images(size=48))


def test_wrong_rank():
    with pytest.raises(ValueError, match=r"rank 4"):
        tiny()(np.zeros((32, 32, 3), "float32"))


def test_dynamic_resolution_rejects_indivisible_size():
    with pytest.raises(ValueError, match=r"width 36 is not divisible by the patch size 8"):
        tiny(dynamic_resolution=True)(np.zeros((1, 32, 36, 3), "float32"))


def test_unknown_variant_lists_known_ones():
    with pytest.raises(ValueError, match=r"Unknown ViT variant 'B/17'.*B/16"):
        keras_vit.ViT.from_variant("B/17")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(classifier="unpooled"), r"classifier='unpooled' .* include_top=False"),
        (
            dict(classifier="unpooled", include_top=False, representation_size=8),
            r"representation_size=None",
        ),
        (dict(classifier="cls"), r"classifier must be one of .*got 'cls'"),
        (dict(semantics="jax"), r"semantics must be one of .*got 'jax'"),
        (dict(num_classes=0), r"num_classes must be >= 1, got 0"),
        (dict(num_heads=5), r"hidden_size 48 must be divisible by num_heads 5"),
        (dict(posemb_interpolation="nearest"), r"posemb_interpolation must be one of"),
    ],
)
def test_contradictory_or_invalid_options(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_classes_and_num_classes_must_agree():
    with pytest.raises(ValueError, match=r"classes=3 and num_classes=4 disagree"):
        keras_vit.ViT_Ti16(classes=3, num_classes=4)


def test_input_shape_must_have_three_entries():
    with pytest.raises(ValueError, match=r"input_shape must be \(height, width, channels\)"):
        keras_vit.ViT_Ti16(input_shape=(224, 224))
