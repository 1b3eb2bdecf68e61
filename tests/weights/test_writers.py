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


def test_big_vision_layout_writes_the_files_big_vision_writes(fixtures_dir, tmp_path):
    """Same names and values as the fixtures' big_vision files (checked against timm's loader)."""
    model = model_from_checkpoint(fixtures_dir / "vit_map_head" / "big_vision.npz", num_heads=4)
    save_official_npz(model, tmp_path / "map.npz", layout="big_vision")
    with (
        np.load(tmp_path / "map.npz") as written,
        np.load(fixtures_dir / "vit_map_head" / "big_vision.npz") as original,
    ):
        assert sorted(written.files) == sorted(original.files)
        for name in original.files:
            np.testing.assert_array_equal(written[name], original[name], name)
    sincos = model_from_checkpoint(
        fixtures_dir / "vit_sincos_gap" / "big_vision.npz", num_heads=4, image_size=32
    )
    save_official_npz(sincos, tmp_path / "sincos.npz", layout="big_vision")
    with (
        np.load(tmp_path / "sincos.npz") as written,
        np.load(fixtures_dir / "vit_sincos_gap" / "big_vision.npz") as original,
    ):
        assert sorted(written.files) == sorted(n.removeprefix("params/") for n in original.files)
        assert "pos_embedding" not in written.files


def test_big_vision_layout_folds_the_class_token_entry_into_the_token(fixtures_dir, tmp_path):
    _, ref = fixture_case("vit_token")
    model = model_from_checkpoint(fixtures_dir / "vit_token" / "official.npz", semantics="timm")
    save_official_npz(model, tmp_path / "bv.npz", layout="big_vision")
    with np.load(tmp_path / "bv.npz") as written:
        assert written["pos_embedding"].shape == (1, 16, 48)
    again = model_from_checkpoint(tmp_path / "bv.npz", semantics="timm")
    assert again.posemb == "learn_grid"
    assert max_diff(again(ref["inputs"]), ref["logits"]) <= TOL


def test_npz_of_a_hugging_face_model_carries_its_numerics(fixtures_dir, tmp_path):
    _, ref = fixture_case("hf_vit")
    model = model_from_checkpoint(fixtures_dir / "hf_vit")
    save_official_npz(model, tmp_path / "hf.npz")
    numerics = json.loads((tmp_path / "hf.npz.keras_vit.json").read_text())
    assert numerics == {
        "layer_norm_epsilon": 1e-12, "semantics": "timm", "posemb_interpolation": "bicubic_hf"
    }  # fmt: skip
    again = model_from_checkpoint(tmp_path / "hf.npz")
    assert (again.layer_norm_epsilon, again.semantics) == (1e-12, "timm")
    assert max_diff(again(ref["inputs"]), ref["logits"]) <= TOL
    (tmp_path / "hf.npz.keras_vit.json").unlink()  # without it: the official defaults
    assert max_diff(model_from_checkpoint(tmp_path / "hf.npz")(ref["inputs"]), ref["logits"]) > TOL


def test_layouts_refuse_what_they_cannot_hold(fixtures_dir, tmp_path):
    deit = model_from_checkpoint(fixtures_dir / "deit_distilled" / "timm.safetensors", num_heads=4)
    with pytest.raises(ValueError, match=r"no a distillation token \(DeiT\).*\.keras"):
        save_official_npz(deit, tmp_path / "deit.npz")
    with pytest.raises(ValueError, match=r"layout must be one of \('vit_jax', 'big_vision'\)"):
        save_official_npz(deit, tmp_path / "deit.npz", layout="flax")
    assert not list(tmp_path.iterdir())


def test_convert_cli_writes_big_vision_and_reads_every_family(fixtures_dir, tmp_path, capsys):
    src = str(fixtures_dir / "vit_map_head" / "big_vision_scanned.npz")
    dst = tmp_path / "unscanned.npz"
    assert main(["convert", src, str(dst), "--num-heads", "4", "--npz-layout", "big_vision"]) == 0
    assert "official .npz (big_vision layout)" in capsys.readouterr().out
    with np.load(dst) as written:
        assert "Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel" in written.files
    for case in ("deit_distilled", "vit_registers_layerscale", "vit_fc_norm"):
        out = tmp_path / f"{case}.keras"
        assert main(["convert", str(fixtures_dir / case / "timm.safetensors"), str(out),
                     "--num-heads", "4"]) == 0  # fmt: skip
        _, ref = fixture_case(case)
        import keras

        reloaded = keras.saving.load_model(out, safe_mode=True)
        assert max_diff(reloaded(ref["inputs"]), ref["logits"]) <= TOL
