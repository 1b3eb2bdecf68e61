"""Live round trips with Hugging Face transformers (torch CPU)."""

import numpy as np
import pytest

from keras_vit import model_from_checkpoint
from keras_vit.weights import save_huggingface

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-5


def random_hf_vit(hidden_act="gelu", image_size=32):
    """A small random ``ViTForImageClassification`` with non-trivial weights."""
    config = transformers.ViTConfig(
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        image_size=image_size,
        patch_size=8,
        num_labels=7,
        hidden_act=hidden_act,
    )
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return model


def hf_logits(model, images, **kwargs):
    pixels = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        return model(pixel_values=pixels, **kwargs).logits.numpy()


def images(height=32, width=32, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (2, height, width, 3)).astype(np.float32)


@pytest.mark.parametrize(
    "hidden_act,semantics", [("gelu", "timm"), ("gelu_pytorch_tanh", "official")]
)
def test_transformers_to_keras_vit(tmp_path, hidden_act, semantics):
    hf = random_hf_vit(hidden_act)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model = model_from_checkpoint(tmp_path)
    assert model.semantics == semantics and model.layer_norm_epsilon == 1e-12
    x = images()
    expected = hf_logits(hf, x)
    assert np.max(np.abs(np.asarray(model(x)) - expected)) <= TOL
    # The other GELU would be told apart at this tolerance.
    other = model_from_checkpoint(tmp_path, semantics="official" if semantics == "timm" else "timm")
    assert np.max(np.abs(np.asarray(other(x)) - expected)) > TOL


def test_interpolate_pos_encoding_matches_bicubic_hf(tmp_path):
    hf = random_hf_vit()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    x = images(48, 64)
    model = model_from_checkpoint(tmp_path, image_size=(48, 64))
    expected = hf_logits(hf, x, interpolate_pos_encoding=True)
    assert np.max(np.abs(np.asarray(model(x)) - expected)) <= TOL


def test_keras_vit_to_transformers(tmp_path):
    hf = random_hf_vit()
    hf.save_pretrained(tmp_path / "source", safe_serialization=True)
    model = model_from_checkpoint(tmp_path / "source")
    x = images()
    ours = np.asarray(model(x))
    save_huggingface(model, tmp_path / "written")
    again = transformers.ViTForImageClassification.from_pretrained(tmp_path / "written").eval()
    assert np.max(np.abs(hf_logits(again, x) - ours)) <= TOL


def test_keras_vit_fine_tuned_model_to_transformers(tmp_path, fixtures_dir):
    """A model born in keras-vit (official .npz, tanh GELU) reaches transformers."""
    model = model_from_checkpoint(fixtures_dir / "vit_token" / "official.npz")
    save_huggingface(model, tmp_path / "hf")
    hf = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.hidden_act == "gelu_pytorch_tanh" and hf.config.layer_norm_eps == 1e-6
    x = images()
    assert np.max(np.abs(hf_logits(hf, x) - np.asarray(model(x)))) <= TOL
