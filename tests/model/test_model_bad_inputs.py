"""Bad arguments to the model: a ValueError naming the argument, the expectation and the value."""

import numpy as np
import pytest

import keras_vit

TINY = dict(image_size=32, patch_size=8, hidden_size=48, num_layers=1, num_heads=4, mlp_dim=96)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(image_size=0), r"image_size must be >= 1, got 0\."),
        (dict(image_size=-16), r"image_size must be >= 1, got -16\."),
        (dict(image_size="88"), r"image_size must be an int or a pair of ints, got '88' \(str\)"),
        (dict(image_size=(32,)), r"image_size must be an int or a pair of ints, got \(32,\)"),
        (dict(image_size=32.0), r"image_size must be an int or a pair of ints, got 32.0"),
        (dict(image_size=(32, "a")), r"image_size must be an int, got 'a' \(str\)"),
        (dict(patch_size=0), r"patch_size must be >= 1, got 0\."),
        (dict(num_classes=2.7), r"num_classes must be an int, got 2.7 \(float\)"),
        (dict(num_classes=-3), r"num_classes must be >= 1, got -3\."),
        (dict(num_classes=True), r"num_classes must be an int, got True \(bool\)"),
        (dict(num_layers=-1), r"num_layers must be >= 0, got -1\."),
        (dict(num_heads=0), r"num_heads must be >= 1, got 0\."),
        (dict(hidden_size=0), r"hidden_size must be >= 1, got 0\."),
        (dict(mlp_dim=0), r"mlp_dim must be >= 1, got 0\."),
        (dict(channels=0), r"channels must be >= 1, got 0\."),
        (dict(representation_size=0), r"representation_size must be >= 1, got 0\."),
        (dict(dropout_rate=1.5), r"dropout_rate must be <= 1.0, got 1.5\."),
        (dict(dropout_rate=-0.1), r"dropout_rate must be >= 0.0, got -0.1\."),
        (dict(drop_path_rate="x"), r"drop_path_rate must be a number, got 'x' \(str\)"),
        (dict(attention_dropout_rate=float("nan")), r"attention_dropout_rate must be a finite"),
        (dict(layer_norm_epsilon=0), r"layer_norm_epsilon must be > 0.0, got 0.0\."),
        (dict(layer_norm_epsilon="x"), r"layer_norm_epsilon must be a number, got 'x'"),
        (dict(include_top="yes"), r"include_top must be True or False, got 'yes'"),
        (dict(dynamic_resolution=1), r"dynamic_resolution must be True or False, got 1"),
        (dict(resnet_layers="abc"), r"resnet_layers must be a sequence of stage depths"),
        (dict(resnet_layers=(3, 0)), r"resnet_layers entry must be >= 1, got 0\."),
        (dict(resnet_width=0), r"resnet_width must be >= 1, got 0\."),
        (dict(image_size=36), r"Image height 36 is not divisible by the patch size 8"),
        (dict(posemb_interpolation="cubic"), r"posemb_interpolation must be one of .*'cubic'"),
    ],
)
def test_numbers_and_types_are_validated(overrides, message):
    with pytest.raises(ValueError, match=message):
        keras_vit.ViT(**{**TINY, "num_classes": 10, **overrides})


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: keras_vit.ViT_B16(classes=3, num_classes=4), r"classes=3 and num_classes=4"),
        (lambda: keras_vit.ViT_B16(input_shape=(224, 224)), r"input_shape must be \(height"),
        (lambda: keras_vit.ViT_B16(input_shape=(224, 224, 3), image_size=384), r"disagree"),
        (lambda: keras_vit.ViT.from_variant("B/17"), r"Unknown ViT variant 'B/17'; known"),
        (lambda: keras_vit.ViT_Ti16(image_size=0), r"image_size must be >= 1, got 0"),
    ],
)
def test_factory_arguments_are_validated(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 32, 32), r"rank 4 .*got shape \(2, 32, 32\)"),
        ((2, 32, 32, 1), r"expects 3 input channel\(s\); got 1"),
        ((2, 48, 48, 3), r"built for 32x32 images; got 48x48"),
    ],
)
def test_calls_with_the_wrong_shape_are_refused(shape, message):
    model = keras_vit.ViT(**TINY, num_classes=3)
    with pytest.raises(ValueError, match=message):
        model(np.zeros(shape, "float32"))
