"""The ViT-family options work with everything that exists: .keras, mixed precision,
dynamic resolution, feature extraction, and refuse what does not make sense."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vit

TINY = dict(image_size=32, patch_size=8, hidden_size=48, num_layers=2, num_heads=4, mlp_dim=96)
OPTIONS = {
    "deit": dict(distillation_token=True),
    "registers_layerscale": dict(num_register_tokens=4, posemb="learn_grid", layer_scale_init=0.1),
    "map": dict(classifier="map"),
    "sincos_gap": dict(classifier="gap", posemb="sincos2d"),
    "fc_norm": dict(classifier="gap", class_token=True, fc_norm=True),
    "no_posemb": dict(classifier="gap", posemb="none", num_register_tokens=1),
}


def images(n=2, size=32, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype("float32")


def randomised(model, seed=1):
    """Random weights everywhere (heads and LayerScale start at zeros and constants)."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    return model


def shared_draws(model, prefix=16):
    """Pairs of a fresh model's random weights that start with the same values.

    Compares the first ``prefix`` values of every two weights (of any shapes)
    that are not constant: weights drawn from one unseeded Keras initializer
    instance repeat its values.
    """
    drawn = [(w.path, np.ravel(w.numpy())) for w in model.weights]
    drawn = [(path, values[:prefix]) for path, values in drawn if np.unique(values).size > 1]
    return [
        (a, b)
        for i, (a, x) in enumerate(drawn)
        for b, y in drawn[i + 1 :]
        if np.array_equal(x[: y.size], y[: x.size])
    ]


FRESH = {
    "plain": {},
    **OPTIONS,
    "hybrid": dict(patch_size=1, image_size=16, resnet_layers=(1, 1), resnet_width=32),
}


@pytest.mark.parametrize("name", FRESH)
def test_fresh_weights_are_drawn_independently(name):
    # Query, key and value kernels once shared one initializer and started
    # equal (OpenVINO then merged the key and value products of our exports).
    model = keras_vit.ViT(**{**TINY, **FRESH[name]}, num_classes=5)
    assert shared_draws(model) == []


@pytest.mark.parametrize("name", OPTIONS)
def test_keras_file_round_trip_in_safe_mode(name, tmp_path):
    model = randomised(keras_vit.ViT(**TINY, num_classes=5, **OPTIONS[name]))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded(images()), model(images()), atol=1e-6)


@pytest.mark.parametrize("name", OPTIONS)
def test_mixed_bfloat16_keeps_the_stream_float32_and_follows_float32(name):
    reference = randomised(keras_vit.ViT(**TINY, num_classes=5, **OPTIONS[name]))
    mixed = keras_vit.ViT(**TINY, num_classes=5, dtype="mixed_bfloat16", **OPTIONS[name])
    mixed.set_weights(reference.get_weights())
    out = mixed.forward_intermediates(images())
    assert out["encoded"].dtype == "float32" and out["logits"].dtype == "float32"
    want = np.asarray(reference(images()))
    diff = np.max(np.abs(np.asarray(out["logits"]) - want))
    assert 0 < diff < 0.05 * np.max(np.abs(want))  # bf16 GEMMs: close, not equal


@pytest.mark.parametrize("name", OPTIONS)
def test_dynamic_resolution_equals_the_model_built_for_that_size(name):
    static = randomised(keras_vit.ViT(**TINY, num_classes=5, **OPTIONS[name]))
    dynamic = keras_vit.ViT(**TINY, num_classes=5, dynamic_resolution=True, **OPTIONS[name])
    dynamic.set_weights(static.get_weights())
    np.testing.assert_allclose(dynamic(images()), static(images()), atol=1e-5)
    at48 = static.inference_copy(image_size=48)
    np.testing.assert_allclose(dynamic(images(size=48)), at48(images(size=48)), atol=1e-5)
    traced = tf.function(dynamic, input_signature=[tf.TensorSpec((None, None, None, 3))])
    np.testing.assert_allclose(traced(images(size=40)), dynamic(images(size=40)), atol=1e-5)


def test_prefix_tokens_come_in_the_order_class_distillation_registers():
    model = keras_vit.ViT(
        **TINY, num_classes=5, distillation_token=True, num_register_tokens=3, posemb="learn_grid"
    )
    for layer, value in ((model.class_token, 1.0), (model.get_layer("dist_token"), 2.0)):
        layer.tokens.assign(np.full(layer.tokens.shape, value, "float32"))
    model.get_layer("reg_token").tokens.assign(np.full((1, 3, 48), 3.0, "float32"))
    sequence = model.encode(np.zeros((1, 16, 48), "float32"), (4, 4))["with_posemb"]
    assert np.asarray(sequence)[0, :5, 0].tolist() == [1.0, 2.0, 3.0, 3.0, 3.0]
    assert model.num_prefix_tokens == 5 and model.head_token_indices == (0, 1)


def test_forward_intermediates_for_chosen_blocks_and_nhwc():
    model = keras_vit.ViT(**{**TINY, "num_layers": 3}, num_classes=5, num_register_tokens=2)
    out = model.forward_intermediates(images(), indices=[0, -1], output_format="NHWC")
    assert {k for k in out if k.startswith("block_")} == {"block_0", "block_2"}
    assert out["block_0"].shape == (2, 4, 4, 48) and out["prefix_0"].shape == (2, 3, 48)
    assert out["patch_tokens"].shape == (2, 4, 4, 48) and out["prefix_tokens"].shape == (2, 3, 48)
    nlc = model.forward_intermediates(images(), indices=1, return_attention=True)
    assert {k for k in nlc if k.startswith(("block_", "attention_"))} == {"block_2", "attention_2"}
    assert nlc["attention_2"].shape == (2, 4, 19, 19)
    np.testing.assert_allclose(
        np.asarray(out["block_2"]).reshape(2, 16, 48), np.asarray(nlc["block_2"])[:, 3:], atol=1e-6
    )
    early = model.forward_intermediates(images(), indices=[0], stop_early=True)
    assert "block_0" in early and "encoded" not in early and "logits" not in early
    only_attention = model.forward_intermediates(images(), return_attention=[1])
    assert [k for k in only_attention if k.startswith("attention_")] == ["attention_1"]


def test_map_models_return_the_probes_attention():
    model = keras_vit.ViT(**TINY, num_classes=5, classifier="map")
    out = model.forward_intermediates(images(), return_attention=True)
    assert out["attention_map"].shape == (2, 4, 1, 16)
    np.testing.assert_allclose(np.sum(out["attention_map"], axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(indices=[5]), r"block index must be <= 1, got 5"),
        (dict(indices=0), r"indices must be >= 1, got 0"),
        (dict(output_format="NCHW"), r"output_format must be one of \('NLC', 'NHWC'\)"),
    ],
)
def test_forward_intermediates_refuses_bad_arguments(kwargs, message):
    model = keras_vit.ViT(**TINY, num_classes=5)
    with pytest.raises(ValueError, match=message):
        model.forward_intermediates(images(), **kwargs)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(class_token=False), r"classifier='token' pools the class token"),
        (dict(distillation_token=True, classifier="gap"), r"distillation_token \(DeiT\) needs"),
        (dict(fc_norm=True), r"fc_norm .* needs classifier='gap', got 'token'"),
        (dict(posemb="sincos2d", hidden_size=50, num_heads=5), r"divisible by 4, got 50"),
        (dict(num_register_tokens=-1), r"num_register_tokens must be >= 0, got -1"),
        (dict(num_register_tokens=1.5), r"num_register_tokens must be an int, got 1.5"),
        (dict(layer_scale_init=0.0), r"layer_scale_init must be > 0.0, got 0.0"),
        (dict(posemb="rope"), r"posemb must be one of .*got 'rope'"),
        (dict(distillation_token="yes"), r"distillation_token must be True or False, got 'yes'"),
    ],
)
def test_options_that_contradict_each_other_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        keras_vit.ViT(**{**TINY, **overrides}, num_classes=5)


def test_a_fixed_size_model_refuses_other_sizes_inside_a_graph():
    model = keras_vit.ViT(**TINY, num_classes=5)
    traced = tf.function(model, input_signature=[tf.TensorSpec((None, None, None, 3))])
    np.testing.assert_allclose(traced(images()), model(images()), atol=1e-5)
    for size in (33, 48):
        with pytest.raises(tf.errors.InvalidArgumentError, match="built for 32x32"):
            traced(images(size=size))


def test_an_empty_batch_through_predict():
    model = keras_vit.ViT(**TINY, num_classes=5)
    assert model.predict(np.zeros((0, 32, 32, 3), "float32"), verbose=0).shape == (0, 5)
    features = keras_vit.ViT(**TINY, include_top=False)
    assert features.predict(np.zeros((0, 32, 32, 3), "float32"), verbose=0).shape == (0, 48)


def test_input_normalisation_of_the_weights_applies_inside_the_model():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    plain = randomised(keras_vit.ViT(**TINY, num_classes=5))
    imagenet = keras_vit.ViT(**TINY, num_classes=5, input_mean=mean, input_std=std)
    imagenet.set_weights(plain.get_weights())
    x = images()
    normalised = ((x + 1) / 2 - np.asarray(mean, "float32")) / np.asarray(std, "float32")
    np.testing.assert_allclose(imagenet(x), plain(normalised), atol=1e-5)
    again = keras_vit.ViT.from_config(imagenet.get_config())
    assert (again.input_mean, again.input_std) == (mean, std)
    with pytest.raises(ValueError, match="input_mean and input_std go together"):
        keras_vit.ViT(**TINY, num_classes=5, input_mean=mean)
    with pytest.raises(ValueError, match=r"input_std must be a sequence of 3 numbers"):
        keras_vit.ViT(**TINY, num_classes=5, input_mean=mean, input_std=(0.2, 0.2))
    with pytest.raises(ValueError, match=r"input_std must be > 0.0, got 0.0"):
        keras_vit.ViT(**TINY, num_classes=5, input_mean=mean, input_std=(0.2, 0.0, 0.2))
