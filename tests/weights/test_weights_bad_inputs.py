"""Weight files that must not load, or not half-load: each a clear error, nothing assigned."""

import json
import zipfile

import numpy as np
import pytest

import keras_vit
from keras_vit import load_weights, model_from_checkpoint
from keras_vit.weights import readers
from keras_vit_cli.main import main

TOKEN = dict(image_size=32, patch_size=8, hidden_size=48, num_layers=2, num_heads=4, mlp_dim=192)


def official(fixtures_dir):
    with np.load(fixtures_dir / "vit_token" / "official.npz") as data:
        return dict(data)


def fresh_model():
    return keras_vit.ViT(**TOKEN, num_classes=10)


def snapshot(model):
    return [np.array(w) for w in model.weights]


def assert_unchanged(model, before):
    for weight, old in zip(model.weights, before):
        np.testing.assert_array_equal(np.asarray(weight), old)


def write_npz(path, tensors):
    np.savez(path, **tensors)
    return path


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("head/kernel", np.ones((48, 10), "int32"), r"'head/kernel' has dtype int32"),
        ("head/bias", np.ones(10, "complex64"), r"'head/bias' has dtype complex64"),
        ("embedding/bias", np.full(48, np.nan, "float32"), r"'embedding/bias' holds NaN"),
        ("cls", np.full((1, 1, 48), np.inf, "float32"), r"'cls' holds NaN or infinite"),
        ("head/bias", np.array(["x"] * 10), r"'head/bias' has dtype <U1"),
        ("head/bias", np.ones(10, "bool"), r"'head/bias' has dtype bool"),
    ],
)
def test_tensors_that_are_not_finite_floats_are_refused_before_any_assignment(
    fixtures_dir, tmp_path, name, value, message
):
    tensors = official(fixtures_dir)
    tensors[name] = value
    model = fresh_model()
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        load_weights(model, write_npz(tmp_path / "bad.npz", tensors))
    assert_unchanged(model, before)


def test_a_head_bias_without_its_kernel_is_a_damaged_file(fixtures_dir, tmp_path):
    tensors = official(fixtures_dir)
    del tensors["head/kernel"]
    model = fresh_model()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"'head' layer is incomplete: it has \['head/bias'\]"):
        load_weights(model, write_npz(tmp_path / "no_kernel.npz", tensors))
    assert_unchanged(model, before)


def _crafted_npz(path, shape):
    """An .npz whose member header claims ``shape`` but holds 16 bytes of data."""
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    body = np.lib.format.magic(1, 0) + _padded_header(header) + b"\0" * 16
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("embedding/kernel.npy", body)
    return path


def _padded_header(header):
    text = repr(header).encode("latin1")
    pad = 64 - (len(text) + 10 + 1) % 64
    text += b" " * pad + b"\n"
    return len(text).to_bytes(2, "little") + text


def test_a_header_claiming_terabytes_is_refused_without_allocating(tmp_path):
    path = _crafted_npz(tmp_path / "huge.npz", (1_000_000, 1_000_000))  # 4 TB of float32
    with pytest.raises(ValueError, match=r"claims an array of shape \(1000000, 1000000\)"):
        model_from_checkpoint(path)


def test_a_member_that_inflates_too_far_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "INFLATION_FLOOR", 2**20)  # the rule, at test scale
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, **{"embedding/kernel": np.zeros((2**20,), "float32")})  # 4 MiB
    with pytest.raises(
        ValueError, match=r"would inflate from [0-9,]+ to 4,194,432 bytes \(more than 100x"
    ):
        model_from_checkpoint(path)


def test_the_default_inflation_limits_leave_real_checkpoints_alone(fixtures_dir):
    assert readers.MAX_INFLATION == 100 and readers.INFLATION_FLOOR == 256 * 2**20
    assert model_from_checkpoint(fixtures_dir / "vit_token" / "official.npz").count_params()


def test_a_safetensors_file_with_integer_weights_is_refused(fixtures_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(fixtures_dir / "vit_token" / "timm.safetensors")
    tensors["head.bias"] = np.arange(10, dtype="int64")
    save_file(tensors, tmp_path / "int.safetensors")
    with pytest.raises(ValueError, match=r"'head.bias' has dtype int64"):
        model_from_checkpoint(tmp_path / "int.safetensors", num_heads=4)


def hf_folder(fixtures_dir, tmp_path, **config_changes):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(
        (fixtures_dir / "hf_vit" / "model.safetensors").read_bytes()
    )
    config = json.loads((fixtures_dir / "hf_vit" / "config.json").read_text())
    config.update(config_changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(num_attention_heads=0), r"num_attention_heads must be positive, got 0"),
        (dict(layer_norm_eps="x"), r"layer_norm_eps must be positive, got 'x'"),
        (dict(model_type="bert"), r"model_type must be 'vit', got 'bert'"),
        (dict(hidden_act="relu"), r"hidden_act must be one of .*got 'relu'"),
        (dict(image_size=0), r"image_size must be positive, got 0"),
    ],
)
def test_hugging_face_configs_out_of_range_are_refused(fixtures_dir, tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        model_from_checkpoint(hf_folder(fixtures_dir, tmp_path, **changes))


def test_a_hugging_face_config_that_is_not_an_object_is_refused(fixtures_dir, tmp_path):
    folder = hf_folder(fixtures_dir, tmp_path)
    (folder / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match=r"must be a JSON object, got list"):
        model_from_checkpoint(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"Cannot read checkpoint config"):
        model_from_checkpoint(folder)


def test_a_numerics_sidecar_with_unknown_keys_is_refused(fixtures_dir, tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes((fixtures_dir / "vit_token" / "official.npz").read_bytes())
    (tmp_path / "m.npz.keras_vit.json").write_text(json.dumps({"gelu": "fast"}))
    with pytest.raises(ValueError, match=r"unknown keys \['gelu'\]"):
        model_from_checkpoint(path)


def test_the_wrong_architecture_leads_with_one_sentence(fixtures_dir):
    with pytest.raises(ValueError) as info:
        keras_vit.ViT_B16(weights=fixtures_dir / "vit_token" / "official.npz")
    first, *rest = str(info.value).splitlines()
    assert "the checkpoint is hidden 48, 2 layers, patch 8x8" in first
    assert "the model is hidden 768, 12 layers, patch 16x16" in first
    assert "model_from_checkpoint" in first
    assert len(rest) <= 22 and rest[-1].strip().startswith("- ... and")


def test_a_folder_of_several_checkpoints_or_none_is_refused(fixtures_dir, tmp_path):
    for name in ("a.npz", "b.npz"):
        (tmp_path / name).write_bytes((fixtures_dir / "vit_token" / "official.npz").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"exactly one .* found \['a.npz', 'b.npz'\]"):
        model_from_checkpoint(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"found none"):
        model_from_checkpoint(empty)


def test_a_keras_file_into_another_variant_names_the_fix(tmp_path, capsys):
    model = keras_vit.ViT(**TOKEN, num_classes=10)
    model.save(tmp_path / "m.keras")
    with pytest.raises(ValueError, match=r"holds its own architecture: .*model_from_checkpoint"):
        keras_vit.ViT_B16(weights=tmp_path / "m.keras")
    code = main(
        ["convert", str(tmp_path / "m.keras"), str(tmp_path / "o.npz"), "--variant", "B/16"]
    )
    assert code == 2 and "holds its own architecture" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()
