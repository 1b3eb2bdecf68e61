"""The ViT family against timm: DeiT, registers + LayerScale, MAP head, sin-cos + gap, fc_norm.

Every file each fixture case ships is loaded by name and shape alone
(``model_from_checkpoint``; the tiny width of 48 states no head count, so
``num_heads=4`` is passed, as the error tells a user to) and must give the
timm references within 1e-5: logits, the features the head receives and the
final token sequence, at the native size and at the second size.
"""

import numpy as np
import pytest

import keras_vit
from keras_vit import model_from_checkpoint
from keras_vit.messages import KerasVitWarning
from keras_vit.model.posemb import sincos_position_embedding
from keras_vit.weights import model_variables

from conftest import fixture_case

TOL = 1e-5


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, "float64") - np.asarray(b, "float64"))))


def load(fixtures_dir, case, file, **overrides):
    return model_from_checkpoint(fixtures_dir / case / file, num_heads=4, **overrides)


def assert_matches(model, ref, logits_key="logits", features=True):
    out = model.forward_intermediates(ref["inputs"])
    assert max_diff(out["logits"], ref[logits_key]) <= TOL
    assert max_diff(out["encoded"], ref["tokens"]) <= TOL
    if features:
        assert max_diff(out["pooled"], ref["features"]) <= TOL
    return out


def test_deit_distilled_both_heads(fixtures_dir):
    _, ref = fixture_case("deit_distilled")
    model = load(fixtures_dir, "deit_distilled", "timm.safetensors")
    assert (model.distillation_token, model.num_prefix_tokens, model.posemb) == (True, 2, "learn")
    out = assert_matches(model, ref, features=False)
    assert max_diff(out["logits_cls"], ref["logits_cls"]) <= TOL
    assert max_diff(out["logits_dist"], ref["logits_dist"]) <= TOL
    assert max_diff(model(ref["inputs"]), (ref["logits_cls"] + ref["logits_dist"]) / 2) <= TOL
    # the two heads disagree, so the mean is a real check of both
    assert max_diff(ref["logits_cls"], ref["logits_dist"]) > 1e-2


def test_registers_and_layer_scale_at_two_sizes(fixtures_dir):
    _, ref = fixture_case("vit_registers_layerscale")
    path = "timm.safetensors"
    model = load(fixtures_dir, "vit_registers_layerscale", path)
    assert (model.num_register_tokens, model.posemb, model.num_prefix_tokens) == (
        4,
        "learn_grid",
        5,
    )
    assert model.layer_scale_init is not None
    assert_matches(model, ref)
    resized = load(fixtures_dir, "vit_registers_layerscale", path, image_size=48)
    table = model_variables(resized)["posembed_input/pos_embedding"]
    assert max_diff(table, ref["pos_embedding_48x48_B"]) <= TOL  # patch grid only, method B
    assert max_diff(resized(ref["inputs_48x48"]), ref["logits_48x48_B"]) <= TOL


@pytest.mark.filterwarnings("ignore:.*not the image tower")  # checked in the first load
@pytest.mark.parametrize("file", ["big_vision_scanned.npz", "big_vision.npz"])
def test_map_head_from_big_vision_files(fixtures_dir, file):
    _, ref = fixture_case("vit_map_head")
    if file == "big_vision_scanned.npz":
        with pytest.warns(KerasVitWarning, match=r"not the image tower.*txt/"):
            model = load(fixtures_dir, "vit_map_head", file)
    else:
        model = load(fixtures_dir, "vit_map_head", file)
    assert (model.classifier, model.class_token_enabled, model.semantics) == (
        "map",
        False,
        "official",
    )
    assert_matches(model, ref)  # big_vision's tanh GELU: the official semantics by default
    exact = load(fixtures_dir, "vit_map_head", file, semantics="timm")
    assert max_diff(exact(ref["inputs"]), ref["logits_exact_gelu"]) <= TOL
    resized = load(fixtures_dir, "vit_map_head", file, image_size=48)
    assert resized.posemb_interpolation == "official"
    assert max_diff(resized(ref["inputs_48x48"]), ref["logits_48x48_C"]) <= TOL


def test_scanned_and_unscanned_big_vision_files_give_identical_models(fixtures_dir):
    scanned = model_variables(load(fixtures_dir, "vit_map_head", "big_vision.npz"))
    with pytest.warns(KerasVitWarning):
        unscanned = model_variables(load(fixtures_dir, "vit_map_head", "big_vision_scanned.npz"))
    assert set(scanned) == set(unscanned)
    for path, variable in scanned.items():
        np.testing.assert_array_equal(np.asarray(variable), np.asarray(unscanned[path]), path)


def test_map_head_from_timm(fixtures_dir):
    _, ref = fixture_case("vit_map_head")
    model = load(fixtures_dir, "vit_map_head", "timm.safetensors")  # timm: exact GELU by default
    assert max_diff(model(ref["inputs"]), ref["logits_exact_gelu"]) <= TOL
    tanh = load(fixtures_dir, "vit_map_head", "timm.safetensors", semantics="official")
    assert_matches(tanh, ref)  # the references' tokens and features are tanh GELU


def test_sincos_gap_recomputes_its_table_at_another_size(fixtures_dir):
    _, ref = fixture_case("vit_sincos_gap")
    with pytest.raises(ValueError, match="image_size"):
        load(fixtures_dir, "vit_sincos_gap", "big_vision.npz")  # no table: the size is unknown
    model = load(fixtures_dir, "vit_sincos_gap", "big_vision.npz", image_size=32)
    assert (model.posemb, model.classifier, model.class_token_enabled) == ("sincos2d", "gap", False)
    assert max_diff(sincos_position_embedding((4, 4), 48), ref["pos_embedding"]) <= TOL
    assert_matches(model, ref)
    exact = load(fixtures_dir, "vit_sincos_gap", "big_vision.npz", image_size=32, semantics="timm")
    assert max_diff(exact(ref["inputs"]), ref["logits_exact_gelu"]) <= TOL
    dynamic = load(
        fixtures_dir, "vit_sincos_gap", "big_vision.npz", image_size=32, dynamic_resolution=True
    )
    assert max_diff(dynamic(ref["inputs_48x48"]), ref["logits_48x48"]) <= TOL
    static = load(fixtures_dir, "vit_sincos_gap", "big_vision.npz", image_size=48)
    assert max_diff(static(ref["inputs_48x48"]), ref["logits_48x48"]) <= TOL


def test_fc_norm_pools_the_patch_tokens_then_normalises(fixtures_dir):
    _, ref = fixture_case("vit_fc_norm")
    model = load(fixtures_dir, "vit_fc_norm", "timm.safetensors")
    assert (model.classifier, model.fc_norm, model.class_token_enabled) == ("gap", True, True)
    assert model.encoder_norm is None
    assert_matches(model, ref)


def test_a_variant_factory_takes_the_family_options_from_the_file(fixtures_dir):
    _, ref = fixture_case("deit_distilled")
    tiny = dict(hidden_size=48, num_layers=2, num_heads=4, mlp_dim=192, patch_size=8)
    model = keras_vit.ViT.from_variant(
        "Ti/16", weights=fixtures_dir / "deit_distilled" / "timm.safetensors", **tiny
    )
    assert model.distillation_token and model.image_size == (32, 32)
    assert max_diff(model(ref["inputs"]), ref["logits"]) <= TOL
    registers = keras_vit.ViT.from_variant(
        "Ti/16", weights=fixtures_dir / "vit_registers_layerscale" / "timm.safetensors", **tiny
    )
    assert (registers.num_register_tokens, registers.posemb) == (4, "learn_grid")


def test_a_checkpoint_without_head_builds_a_feature_model_unless_asked(fixtures_dir, tmp_path):
    from keras_vit.weights import save_official_npz

    _, ref = fixture_case("vit_map_head")
    features = load(fixtures_dir, "vit_map_head", "big_vision.npz", include_top=False)
    save_official_npz(features, tmp_path / "headless.npz")
    tiny = dict(hidden_size=48, num_layers=2, num_heads=4, mlp_dim=192, patch_size=8)
    default = keras_vit.ViT.from_variant("Ti/16", weights=tmp_path / "headless.npz", **tiny)
    assert default.head is None and default.classifier == "map"
    assert max_diff(default(ref["inputs"]), ref["features"]) <= TOL
    with pytest.warns(KerasVitWarning, match="no 'head' layer"):
        classifier = keras_vit.ViT.from_variant(
            "Ti/16", weights=tmp_path / "headless.npz", include_top=True, num_classes=3, **tiny
        )
    assert classifier.head.kernel.shape == (48, 3)


def test_a_registry_entry_builds_its_family_with_its_normalisation(
    fixtures_dir, tmp_path, monkeypatch
):
    """An entry's options and input normalisation become the factory's defaults."""
    from keras_vit.weights import registry

    entry = registry.WeightsEntry(
        variant="Ti/16",
        sources=(
            registry.Source(
                (fixtures_dir / "deit_distilled" / "timm.safetensors").as_uri(), "timm"
            ),
        ),
        num_classes=10,
        resolution=32,
        options=dict(distillation_token=True, semantics="timm", posemb_interpolation="bicubic"),
        mean=registry.IMAGENET[0],
        std=registry.IMAGENET[1],
    )
    monkeypatch.setitem(registry.REGISTRY, "deit_tiny_fixture.test", entry)
    monkeypatch.setenv("KERAS_VIT_CACHE", str(tmp_path / "cache"))
    tiny = dict(hidden_size=48, num_layers=2, num_heads=4, mlp_dim=192, patch_size=8)
    model = keras_vit.ViT.from_variant("Ti/16", weights="deit_tiny_fixture.test", **tiny)
    assert model.distillation_token and model.image_size == (32, 32)
    assert (model.input_mean, model.input_std) == registry.IMAGENET
    _, ref = fixture_case("deit_distilled")
    mean, std = (np.asarray(v, "float32") for v in registry.IMAGENET)
    # The reference fed timm its inputs as they are; a keras-vit user feeds [-1, 1] pixels.
    pixels = ((ref["inputs"] * std + mean) * 2.0 - 1.0).astype("float32")
    assert max_diff(model(pixels), ref["logits"]) <= TOL
