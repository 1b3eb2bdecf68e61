"""Head handling and every loading error: clear messages, nothing half-loaded."""

import re

import numpy as np
import pytest

import keras_vit
from keras_vit import load_weights, model_from_checkpoint

from conftest import fixture_case

TOL = 1e-5
TOKEN = dict(image_size=32, patch_size=8, hidden_size=48, num_layers=2, num_heads=4, mlp_dim=192)


def official(fixtures_dir, case="vit_token"):
    with np.load(fixtures_dir / case / "official.npz") as data:
        return dict(data)


def snapshot(model):
    return [np.array(w) for w in model.weights]


def assert_unchanged(model, before):
    for weight, old in zip(model.weights, before):
        np.testing.assert_array_equal(np.asarray(weight), old)


def test_other_class_count_loads_all_but_the_head(fixtures_dir):
    _, ref = fixture_case("vit_token")
    with pytest.warns(UserWarning, match=r"'head'.*checkpoint: 10 classes, model: 5"):
        model = keras_vit.ViT_B16(
            weights=fixtures_dir / "vit_token" / "timm.safetensors", num_classes=5, **TOKEN
        )
    assert model.num_classes == 5
    np.testing.assert_array_equal(np.asarray(model.head.kernel), 0.0)
    out = model.forward_intermediates(ref["inputs"])
    assert np.max(np.abs(np.asarray(out["pooled"]) - ref["features"])) <= TOL


def test_representation_size_none_drops_pre_logits_and_its_head(fixtures_dir):
    _, ref = fixture_case("vit_repr")
    path = fixtures_dir / "vit_repr" / "official.npz"
    kept = keras_vit.ViT_B16(weights=path, semantics="timm", **TOKEN)
    assert kept.representation_size == 32
    assert np.max(np.abs(np.asarray(kept(ref["inputs"])) - ref["logits"])) <= TOL
    with pytest.warns(UserWarning, match="pre_logits.*dropped"):
        dropped = keras_vit.ViT_B16(
            weights=path, representation_size=None, semantics="timm", **TOKEN
        )
    assert dropped.pre_logits is None
    out = dropped.forward_intermediates(ref["inputs"])
    assert np.max(np.abs(np.asarray(out["pooled"]) - ref["features"])) <= TOL
    np.testing.assert_array_equal(np.asarray(dropped.head.kernel), 0.0)


def test_include_top_false_ignores_the_head(fixtures_dir, recwarn):
    _, ref = fixture_case("vit_token")
    model = keras_vit.ViT_B16(
        weights=fixtures_dir / "vit_token" / "official.npz",
        include_top=False,
        semantics="timm",
        **TOKEN,
    )
    assert not [w for w in recwarn if "head" in str(w.message)]
    assert np.max(np.abs(np.asarray(model(ref["inputs"])) - ref["features"])) <= TOL


def test_missing_tensor_is_named_and_nothing_is_assigned(fixtures_dir, tmp_path):
    tensors = official(fixtures_dir)
    del tensors["Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"]
    np.savez(tmp_path / "missing.npz", **tensors)
    model = keras_vit.ViT(**TOKEN, num_classes=10)
    before = snapshot(model)
    with pytest.raises(
        ValueError, match=r"missing tensor for 'encoderblock_1/MlpBlock_3/Dense_0/bias' \(192,\)"
    ):
        load_weights(model, tmp_path / "missing.npz")
    assert_unchanged(model, before)


def test_unexpected_and_mis_shaped_tensors_are_all_listed(fixtures_dir, tmp_path):
    tensors = official(fixtures_dir)
    tensors["Transformer/encoderblock_0/extra/kernel"] = np.zeros((3,), np.float32)
    tensors["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"] = np.zeros(
        (48, 100), np.float32
    )
    np.savez(tmp_path / "bad.npz", **tensors)
    model = keras_vit.ViT(**TOKEN, num_classes=10)
    before = snapshot(model)
    with pytest.raises(ValueError) as info:
        load_weights(model, tmp_path / "bad.npz")
    message = str(info.value)
    assert "unexpected tensor 'Transformer/encoderblock_0/extra/kernel' (3,)" in message
    assert re.search(r"Dense_0/kernel'.*checkpoint shape \(48, 100\).*expects \(48, 192\)", message)
    assert_unchanged(model, before)


def test_other_depth_reports_missing_blocks(fixtures_dir):
    model = keras_vit.ViT(**{**TOKEN, "num_layers": 3}, num_classes=10)
    with pytest.raises(ValueError, match="missing tensor for 'encoderblock_2/"):
        load_weights(model, fixtures_dir / "vit_token" / "timm.safetensors")


def test_class_token_checkpoint_into_gap_model(fixtures_dir):
    model = keras_vit.ViT(**TOKEN, num_classes=10, classifier="gap")
    with pytest.raises(ValueError, match="class-token entry.*no class token"):
        load_weights(model, fixtures_dir / "vit_token" / "official.npz")


def test_truncated_npz(fixtures_dir, tmp_path):
    data = (fixtures_dir / "vit_token" / "official.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    model = keras_vit.ViT(**TOKEN, num_classes=10)
    before = snapshot(model)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_weights(model, tmp_path / "cut.npz")
    assert_unchanged(model, before)


def test_corrupt_safetensors(fixtures_dir, tmp_path):
    data = (fixtures_dir / "vit_token" / "timm.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:1000])
    with pytest.raises(ValueError, match="not a readable .safetensors"):
        model_from_checkpoint(tmp_path / "cut.safetensors")


def test_pickled_npz_is_refused(tmp_path):
    np.savez(tmp_path / "pickled.npz", cls=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled Python objects"):
        model_from_checkpoint(tmp_path / "pickled.npz")


def test_unknown_registry_name_lists_known_ones():
    with pytest.raises(
        ValueError,
        match=r"(?s)Unknown weights 'vit_nope'.*vit_base_patch16_224\.augreg_in21k_ft_in1k",
    ):
        keras_vit.ViT_B16(weights="vit_nope")


def test_registry_name_for_another_variant():
    with pytest.raises(ValueError, match=r"for ViT-L/16, not ViT-B/16.*ViT_L16"):
        keras_vit.ViT_B16(weights="vit_large_patch16_224.augreg_in21k_ft_in1k")


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="not found"):
        keras_vit.ViT_B16(weights="/nonexistent/ViT-B_16.npz")


def test_unsupported_file_type(tmp_path):
    (tmp_path / "model.pth").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match=r"Unsupported checkpoint.*\.npz"):
        model_from_checkpoint(tmp_path / "model.pth")


def test_timm_heads_need_a_config_for_non_standard_widths(fixtures_dir):
    with pytest.raises(ValueError, match="pass num_heads"):
        model_from_checkpoint(fixtures_dir / "vit_token" / "timm.safetensors")


def test_weights_h5_needs_an_architecture(tmp_path):
    model = keras_vit.ViT(**TOKEN, num_classes=10)
    model.save_weights(tmp_path / "w.weights.h5")
    with pytest.raises(ValueError, match="without an architecture"):
        model_from_checkpoint(tmp_path / "w.weights.h5")
