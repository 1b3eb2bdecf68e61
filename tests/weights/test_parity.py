"""Checkpoint parity: every fixture case through every format it ships.

References come from timm 1.0.31 and transformers 5.23.0 (../shared/fixtures),
never from keras-vit itself.
"""

import numpy as np
import pytest

import keras_vit
from keras_vit import model_from_checkpoint
from keras_vit.weights import read_checkpoint

from conftest import fixture_case

TOL = 1e-5
SMALL = dict(hidden_size=48, num_layers=2, num_heads=4, mlp_dim=192)
METHODS = {"A": "bilinear", "B": "bicubic", "C": "official"}

# (case, checkpoint file) for every format each case ships.
SOURCES = [
    ("vit_token", "official.npz"),
    ("vit_token", "timm.safetensors"),
    ("vit_gap", "official.npz"),
    ("vit_gap", "timm.safetensors"),
    ("vit_repr", "official.npz"),
    ("hybrid", "official.npz"),
    ("hybrid", "timm.safetensors"),
    ("hf_vit", "model.safetensors"),
]


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b)))


@pytest.mark.parametrize("case,filename", SOURCES)
def test_native_size_logits_features_and_tokens(fixtures_dir, case, filename):
    _, ref = fixture_case(case)
    model = model_from_checkpoint(fixtures_dir / case / filename, num_heads=4, semantics="timm")
    out = model.forward_intermediates(ref["inputs"])
    assert max_diff(out["logits"], ref["logits"]) <= TOL
    if "features" in ref:
        assert max_diff(out["pooled"], ref["features"]) <= TOL
        assert max_diff(out["encoded"], ref["tokens"]) <= TOL
    if "representation" in ref:
        assert max_diff(out["pre_logits"], ref["representation"]) <= TOL


@pytest.mark.parametrize("case,filename", [s for s in SOURCES if s[0] != "hf_vit"])
def test_official_semantics_switch(fixtures_dir, case, filename):
    _, ref = fixture_case(case)
    model = model_from_checkpoint(fixtures_dir / case / filename, num_heads=4, semantics="official")
    assert max_diff(model(ref["inputs"]), ref["logits_official_semantics"]) <= TOL
    # The two semantics really differ at this tolerance.
    assert max_diff(ref["logits"], ref["logits_official_semantics"]) > 10 * TOL


RESIZED = [
    (case, filename, size, letter)
    for case, filename in SOURCES
    if case in ("vit_token", "vit_gap")
    for size in (("48x48", "32x48") if case == "vit_token" else ("48x48",))
    for letter in METHODS
]


@pytest.mark.parametrize("case,filename,size,letter", RESIZED)
def test_resized_position_embedding_on_load(fixtures_dir, case, filename, size, letter):
    _, ref = fixture_case(case)
    height, width = (int(s) for s in size.split("x"))
    model = model_from_checkpoint(
        fixtures_dir / case / filename,
        num_heads=4,
        semantics="timm",
        image_size=(height, width),
        posemb_interpolation=METHODS[letter],
    )
    posemb = model.position_embedding.pos_embedding
    assert max_diff(posemb, ref[f"pos_embedding_{size}_{letter}"]) <= TOL
    assert max_diff(model(ref[f"inputs_{size}"]), ref[f"logits_{size}_{letter}"]) <= TOL


def test_hugging_face_resize_is_bicubic_hf_by_default(fixtures_dir):
    _, ref = fixture_case("hf_vit")
    model = model_from_checkpoint(fixtures_dir / "hf_vit", image_size=48)
    assert model.posemb_interpolation == "bicubic_hf"
    assert model.layer_norm_epsilon == 1e-12
    assert max_diff(model(ref["inputs_48x48"]), ref["logits_48x48_hf"]) <= TOL


def test_loaded_model_resizes_in_graph_with_the_remembered_method(fixtures_dir):
    """dynamic_resolution uses the same method as the load did."""
    _, ref = fixture_case("vit_token")
    model = model_from_checkpoint(
        fixtures_dir / "vit_token" / "timm.safetensors", dynamic_resolution=True, num_heads=4
    )
    assert model.posemb_interpolation == "bicubic"
    assert max_diff(model(ref["inputs_32x48"]), ref["logits_32x48_B"]) <= TOL


def test_factory_defaults_come_from_the_checkpoint(fixtures_dir):
    """`.npz` -> official semantics and resize; image size and classes read."""
    _, ref = fixture_case("vit_token")
    model = keras_vit.ViT_B16(
        weights=fixtures_dir / "vit_token" / "official.npz", patch_size=8, **SMALL
    )
    assert (model.semantics, model.posemb_interpolation) == ("official", "official")
    assert model.image_size == (32, 32) and model.num_classes == 10
    assert max_diff(model(ref["inputs"]), ref["logits_official_semantics"]) <= TOL
    resized = keras_vit.ViT_B16(
        weights=fixtures_dir / "vit_token" / "official.npz",
        patch_size=8,
        image_size=48,
        semantics="timm",
        **SMALL,
    )
    assert max_diff(resized(ref["inputs_48x48"]), ref["logits_48x48_C"]) <= TOL


def test_factory_with_timm_and_hf_defaults(fixtures_dir):
    _, ref = fixture_case("vit_gap")
    timm_model = keras_vit.ViT_B16(
        weights=fixtures_dir / "vit_gap" / "timm.safetensors", patch_size=8, **SMALL
    )
    assert (timm_model.semantics, timm_model.posemb_interpolation) == ("timm", "bicubic")
    assert timm_model.classifier == "gap"
    assert max_diff(timm_model(ref["inputs"]), ref["logits"]) <= TOL
    _, hf_ref = fixture_case("hf_vit")
    hf_model = keras_vit.ViT_B16(weights=fixtures_dir / "hf_vit", patch_size=8, **SMALL)
    assert hf_model.layer_norm_epsilon == 1e-12
    assert max_diff(hf_model(hf_ref["inputs"]), hf_ref["logits"]) <= TOL


def _big_vision_layout(checkpoint):
    """The fixture's official tensors as big_vision stores them.

    ``params/`` prefix, linen module names, position embedding at the top
    level without a class-token entry (its value folded into ``cls``).
    """
    tensors = {}
    renames = {
        "MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
        "LayerNorm_2": "LayerNorm_1",
        "MlpBlock_3": "MlpBlock_0",
    }
    for name, value in checkpoint.items():
        for old, new in renames.items():
            name = name.replace(f"/{old}/", f"/{new}/")
        tensors["params/" + name] = value
    posemb = tensors.pop("params/Transformer/posembed_input/pos_embedding")
    tensors["params/cls"] = tensors["params/cls"] + posemb[:, :1]
    tensors["params/pos_embedding"] = posemb[:, 1:]
    return tensors


def test_big_vision_layout(fixtures_dir, tmp_path):
    _, ref = fixture_case("vit_token")
    with np.load(fixtures_dir / "vit_token" / "official.npz") as official:
        np.savez(tmp_path / "bv.npz", **_big_vision_layout(dict(official)))
    model = model_from_checkpoint(tmp_path / "bv.npz", semantics="timm")
    assert max_diff(model(ref["inputs"]), ref["logits"]) <= TOL
    resized = model_from_checkpoint(tmp_path / "bv.npz", semantics="timm", image_size=48)
    # The class-token entry is zero, so the folded class token is equivalent.
    assert max_diff(resized(ref["inputs_48x48"]), ref["logits_48x48_C"]) <= TOL


def test_old_group_norm_layout_of_hybrids(fixtures_dir, tmp_path):
    """Old official files store GroupNorm scale/bias as (1, 1, 1, C)."""
    _, ref = fixture_case("hybrid")
    with np.load(fixtures_dir / "hybrid" / "official.npz") as official:
        tensors = {
            k: v.reshape(1, 1, 1, -1) if "/gn" in "/" + k else v for k, v in official.items()
        }
    assert tensors["gn_root/scale"].shape == (1, 1, 1, 32)
    np.savez(tmp_path / "old.npz", **tensors)
    model = model_from_checkpoint(tmp_path / "old.npz", semantics="official")
    assert model.resnet_layers == (1, 1) and model.resnet_width == 32
    assert max_diff(model(ref["inputs"]), ref["logits_official_semantics"]) <= TOL


def test_read_checkpoint_detects_every_format(fixtures_dir):
    formats = {
        "vit_token/official.npz": "official",
        "vit_token/timm.safetensors": "timm",
        "hf_vit/model.safetensors": "hf",
        "hf_vit": "hf",
    }
    for path, fmt in formats.items():
        assert read_checkpoint(fixtures_dir / path).format == fmt
