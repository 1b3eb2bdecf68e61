"""The head's rows only: the last block of a class-token model computes the rows its head reads."""

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.model import blocks as vit_blocks

TINY = dict(image_size=32, patch_size=8, hidden_size=48, num_layers=2, num_heads=4, mlp_dim=96)
rng = np.random.default_rng(0)


def randomised(model):
    """``model`` with every weight random (the head, class token and biases start at zero)."""
    model.set_weights([rng.normal(0.0, 0.2, w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


def images(batch=2):
    return rng.uniform(-1, 1, (batch, 32, 32, 3)).astype("float32")


CLASS_TOKEN_MODELS = {
    "token": dict(),
    "distilled": dict(distillation_token=True),
    "registers+layerscale": dict(num_register_tokens=2, layer_scale_init=0.5),
    "pre_logits": dict(representation_size=24, include_top=False),
}


@pytest.mark.parametrize("overrides", CLASS_TOKEN_MODELS.values(), ids=CLASS_TOKEN_MODELS)
def test_head_outputs_equal_the_full_forward_pass(overrides):
    model = randomised(keras_vit.ViT(**TINY, num_classes=10, **overrides))
    x = images()
    full = model.forward_intermediates(x)
    lean = model.head_outputs(x)
    assert sorted(lean) == sorted(k for k in full if k in lean) and "pre_logits" in lean
    for name, value in lean.items():
        assert np.std(full[name]) > 0.1  # random weights: an all-zero output would prove nothing
        np.testing.assert_allclose(value, full[name], rtol=1e-5, atol=1e-5, err_msg=name)
    expected = full["logits"] if model.head is not None else full["pre_logits"]
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "overrides, rows",
    [
        (dict(), 1),
        (dict(distillation_token=True, num_register_tokens=2), 2),
        (dict(classifier="gap"), 16),
    ],
)
def test_the_last_block_computes_only_the_rows_the_head_reads(overrides, rows):
    model = keras_vit.ViT(**TINY, num_classes=10, **overrides)
    out, grid = model.embed_patches(images())
    encoded = model.encode(out["patches"], grid, head_tokens_only=True)["encoded"]
    assert tuple(encoded.shape) == (2, rows, 48)
    full = model.encode(out["patches"], grid)["encoded"]
    assert full.shape[1] == 16 + model.num_prefix_tokens


def test_unpooled_model_has_no_head_outputs():
    model = keras_vit.ViT(**TINY, classifier="unpooled", include_top=False)
    with pytest.raises(ValueError, match="unpooled"):
        model.head_outputs(images())


@pytest.mark.parametrize("layer_scale_init", [None, 0.3])
def test_block_output_tokens_are_the_full_blocks_first_rows(layer_scale_init):
    block = vit_blocks.TransformerBlock(4, 32, layer_scale_init=layer_scale_init)
    x = rng.normal(size=(2, 7, 16)).astype("float32")
    block.build(x.shape)
    block.set_weights([rng.normal(0.0, 0.3, w.shape) for w in block.get_weights()])
    full, full_scores = block(x, return_attention_scores=True)
    head, scores = block(x, return_attention_scores=True, output_tokens=2)
    assert tuple(head.shape) == (2, 2, 16) and tuple(scores.shape) == (2, 4, 2, 7)
    np.testing.assert_allclose(head, full[:, :2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, full_scores[:, :, :2], rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(full[:, 2:]) - np.asarray(full[:, :1])).max() > 0.1


def test_block_output_tokens_shape_is_known_symbolically():
    block = vit_blocks.TransformerBlock(4, 32)
    tokens = keras.Input((7, 16))
    assert tuple(block(tokens, output_tokens=3).shape) == (None, 3, 16)
    assert tuple(block(tokens).shape) == (None, 7, 16)


@pytest.mark.parametrize("output_tokens", [0, -1, 8, 1.5, True, "1"])
def test_block_refuses_output_tokens_outside_one_to_the_token_count(output_tokens):
    block = vit_blocks.TransformerBlock(4, 32)
    x = rng.normal(size=(2, 7, 16)).astype("float32")
    with pytest.raises(ValueError, match="output_tokens"):
        block(x, output_tokens=output_tokens)
