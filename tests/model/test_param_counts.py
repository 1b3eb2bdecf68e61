"""Parameter counts: the official numbers, and ``count_parameters`` against built models."""

import pytest

import keras_vit
from keras_vit.model.variants import count_parameters

# Official counts at 224x224 with 1000 classes (vit_jax / timm).
OFFICIAL_COUNTS = {
    "Ti/16": 5_717_416,
    "S/16": 22_050_664,
    "S/32": 22_878_952,
    "B/8": 86_576_872,
    "B/16": 86_567_656,
    "B/32": 88_224_232,
    "L/16": 304_326_632,
    "L/32": 306_535_400,
    "H/14": 632_045_800,
    "R+Ti/16": 6_337_704,
    "R26+S/32": 36_431_912,
    "R26+B/32": 101_383_976,
    "R50+B/16": 98_659_112,
    "R50+L/32": 328_994_856,
}


@pytest.mark.parametrize("variant, expected", OFFICIAL_COUNTS.items())
def test_count_parameters_gives_the_official_count(variant, expected):
    assert count_parameters(variant) == expected


@pytest.mark.parametrize("variant", ["Ti/16", "S/32", "R+Ti/16", "R26+S/32"])
def test_built_variant_has_the_official_count(variant):
    model = keras_vit.build_variant(variant)
    assert model.count_params() == OFFICIAL_COUNTS[variant]


TINY = dict(hidden_size=48, num_layers=2, num_heads=4, mlp_dim=96)


@pytest.mark.parametrize(
    "variant, kwargs",
    [
        ("Ti/16", dict(image_size=32, patch_size=8)),
        ("Ti/16", dict(image_size=(32, 48), patch_size=8, classifier="gap")),
        ("Ti/16", dict(image_size=32, patch_size=8, representation_size=24)),
        ("Ti/16", dict(image_size=32, patch_size=8, include_top=False, channels=1)),
        ("R+Ti/16", dict(image_size=64, resnet_width=32)),
        ("R26+S/32", dict(image_size=64, patch_size=2, resnet_layers=(1, 1), resnet_width=32)),
        (
            "R26+S/32",
            dict(
                image_size=64,
                resnet_layers=(2, 1, 1),
                resnet_width=32,
                classifier="gap",
                representation_size=16,
            ),
        ),
        (
            "R50+B/16",
            dict(
                image_size=(32, 64),
                resnet_layers=(1, 2),
                resnet_width=32,
                classifier="unpooled",
                include_top=False,
            ),
        ),
    ],
)
def test_count_parameters_equals_the_built_model(variant, kwargs):
    kwargs = {**TINY, "num_classes": 7, **kwargs}
    model = keras_vit.build_variant(variant, **kwargs)
    assert count_parameters(variant, **kwargs) == model.count_params()


def test_count_parameters_rejects_unknown_overrides_and_bad_sizes():
    with pytest.raises(ValueError, match="Unknown overrides"):
        count_parameters("B/16", hidden=10)
    with pytest.raises(ValueError, match="not divisible by the total stride"):
        count_parameters("R50+B/16", image_size=200)
    with pytest.raises(ValueError, match="Unknown ViT variant"):
        count_parameters("R101+B/16")


# The ViT family, counted by timm 1.0.31 (1000 classes unless 0): the numbers.
FAMILY_COUNTS = {
    "deit_tiny_distilled_patch16_224": ("Ti/16", dict(distillation_token=True), 5_910_800),
    "deit_small_distilled_patch16_224": ("S/16", dict(distillation_token=True), 22_436_432),
    "deit_base_distilled_patch16_224": ("B/16", dict(distillation_token=True), 87_338_192),
    "deit3_small_patch16_224": (
        "S/16",
        dict(layer_scale_init=1e-6, posemb="learn_grid"),
        22_059_496,
    ),
    "deit3_base_patch16_224": (
        "B/16",
        dict(layer_scale_init=1e-6, posemb="learn_grid"),
        86_585_320,
    ),
    "vit_small_patch14_dinov2": (
        "S/14",
        dict(image_size=518, include_top=False, layer_scale_init=1e-5),
        22_056_192,
    ),
    "vit_small_patch14_reg4_dinov2": (
        "S/14",
        dict(
            image_size=518,
            include_top=False,
            layer_scale_init=1e-5,
            num_register_tokens=4,
            posemb="learn_grid",
        ),
        22_057_344,
    ),
    "vit_base_patch14_reg4_dinov2": (
        "B/14",
        dict(
            image_size=518,
            include_top=False,
            layer_scale_init=1e-5,
            num_register_tokens=4,
            posemb="learn_grid",
        ),
        86_582_016,
    ),
    "vit_base_patch16_siglip_224": ("B/16", dict(classifier="map", include_top=False), 92_884_224),
    "vit_base_patch16_reg4_gap_256": (
        "B/16",
        dict(
            image_size=256,
            classifier="gap",
            num_register_tokens=4,
            posemb="learn_grid",
            fc_norm=True,
        ),
        86_615_272,
    ),
}


@pytest.mark.parametrize("timm_name", FAMILY_COUNTS)
def test_family_counts_equal_timms_built_and_from_the_table(timm_name):
    variant, options, expected = FAMILY_COUNTS[timm_name]
    assert keras_vit.ViT.from_variant(variant, **options).count_params() == expected
    assert count_parameters(variant, **options) == expected
