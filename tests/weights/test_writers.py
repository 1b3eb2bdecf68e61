"""Writers and `keras-vit convert`: written files reload to the fixtures' references."""

import json

import numpy as np
import pytest

from keras_vit import model_from_checkpoint
from keras_vit.weights import read_checkpoint, save_huggingface, save_official_npz
from keras_vit_cli.main import main

from conftest import fixture_case

TOL = 1e-5


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.mark.parametrize("case", ["vit_token", "vit_gap", "vit_repr", "hybrid"])
def test_official_npz_round_trip_keeps_the_reference(fixtures_dir, tmp_path, case):
    _, ref = fixture_case(case)
    model = model_from_checkpoint(fixtures_dir / case / "official.npz", semantics="timm")
    save_official_npz(model, tmp_path / "out.npz")
    written = read_checkpoint(tmp_path / "out.npz").tensors
    with np.load(fixtures_dir / case / "official.npz") as original:
        assert sorted(written) == sorted(original.files)
        for name in original.files:
            np.testing.assert_array_equal(written[name], original[name])
    again = model_from_checkpoint(tmp_path / "out.npz", semantics="timm")
    assert max_diff(again(ref["inputs"]), ref["logits"]) <= TOL


def test_huggingface_writer_matches_the_transformers_files(fixtures_dir, tmp_path):
    """Same tensor names and values as the file transformers itself wrote."""
    _, ref = fixture_case("hf_vit")
    model = model_from_checkpoint(fixtures_dir / "hf_vit")
    save_huggingface(model, tmp_path / "hf")
    written = read_checkpoint(tmp_path / "hf").tensors
    original = read_checkpoint(fixtures_dir / "hf_vit").tensors
    assert sorted(written) == sorted(original)
    for name in original:
        np.testing.assert_array_equal(written[name], original[name])
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    expected = json.loads((fixtures_dir / "hf_vit" / "config.json").read_text())
    for key in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "layer_norm_eps",
        "image_size",
        "patch_size",
        "id2label",
    ):
        assert config[key] == expected[key], key
    assert max_diff(model_from_checkpoint(tmp_path / "hf")(ref["inputs"]), ref["logits"]) <= TOL


def test_huggingface_writer_refuses_what_hf_vit_cannot_hold(fixtures_dir, tmp_path):
    model = model_from_checkpoint(fixtures_dir / "vit_repr" / "official.npz")
    with pytest.raises(ValueError, match="pre_logits"):
        save_huggingface(model, tmp_path / "hf")
    gap = model_from_checkpoint(fixtures_dir / "vit_gap" / "official.npz")
    with pytest.raises(ValueError, match="classifier='gap'"):
        save_huggingface(gap, tmp_path / "hf")
    assert not (tmp_path / "hf" / "model.safetensors").exists()


def test_convert_cli_to_every_destination(fixtures_dir, tmp_path, capsys):
    _, ref = fixture_case("vit_token")
    src = str(fixtures_dir / "vit_token" / "timm.safetensors")
    outputs = {
        "m.keras": "Keras",
        "m.weights.h5": "Keras",
        "m.npz": "official .npz",
        "hf_folder": "Hugging Face",
    }
    for name, kind in outputs.items():
        code = main(
            ["convert", src, str(tmp_path / name), "--num-heads", "4", "--semantics", "official"]
        )
        assert code == 0
        assert f"Wrote {kind}" in capsys.readouterr().out
    for name in ("m.keras", "m.npz", "hf_folder"):
        model = model_from_checkpoint(
            tmp_path / name, **({} if name == "m.keras" else {"semantics": "official"})
        )
        assert max_diff(model(ref["inputs"]), ref["logits_official_semantics"]) <= TOL, name
    from keras_vit.model.factories import build_variant

    tiny = dict(
        patch_size=8,
        hidden_size=48,
        num_layers=2,
        num_heads=4,
        mlp_dim=192,
        image_size=32,
        num_classes=10,
    )
    h5 = build_variant("B/16", weights=tmp_path / "m.weights.h5", semantics="official", **tiny)
    assert max_diff(h5(ref["inputs"]), ref["logits_official_semantics"]) <= TOL


def test_convert_cli_resizes_and_reports_errors(fixtures_dir, tmp_path, capsys):
    _, ref = fixture_case("vit_token")
    src = str(fixtures_dir / "vit_token" / "official.npz")
    assert main(["convert", src, str(tmp_path / "r.npz"), "--image-size", "32x48"]) == 0
    resized = model_from_checkpoint(tmp_path / "r.npz", image_size=(32, 48), semantics="timm")
    assert max_diff(resized(ref["inputs_32x48"]), ref["logits_32x48_C"]) <= TOL
    assert main(["convert", str(tmp_path / "absent.npz"), str(tmp_path / "x.keras")]) == 2
    assert "not found" in capsys.readouterr().err
