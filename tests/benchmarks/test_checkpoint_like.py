"""The benchmark's models carry no constant parameter (no zero bias, no unit norm).

A freshly initialised ViT's zero biases and identity LayerNorms are folded away
by graph compilers, so a benchmark of it would time other kernels than a real
checkpoint runs.
"""

import numpy as np
import pytest

from benchmarks import checkpoint_like


def _constant(values):
    return bool(np.all(values == values.flat[0]))


def test_a_constant_array_gets_noise_of_the_stated_scale_and_keeps_its_dtype():
    rng = np.random.default_rng(0)
    ones = np.ones((64, 64), "float32")
    out = checkpoint_like.perturbed(ones, rng)
    assert out.dtype == np.float32 and out.shape == ones.shape
    assert not _constant(out)
    assert abs(float(np.std(out - 1.0)) - checkpoint_like.STD) < 0.002
    assert abs(float(np.mean(out - 1.0))) < 0.002


def test_an_array_that_is_already_random_is_left_unchanged():
    values = np.random.default_rng(1).normal(size=(8, 4)).astype("float32")
    out = checkpoint_like.perturbed(values, np.random.default_rng(0))
    np.testing.assert_array_equal(out, values)


def test_a_keras_vit_keeps_no_constant_weight_and_its_random_weights_unchanged():
    from keras_vit.model.factories import build_variant

    model = build_variant("Ti/16", image_size=32, num_classes=5)
    before = {w.path: w.numpy().copy() for w in model.trainable_weights}
    constant = [path for path, values in before.items() if _constant(values)]
    assert any("norm" in path for path in constant)  # the initialisation has them
    checkpoint_like.keras_model(model)
    for weight in model.trainable_weights:
        after = weight.numpy()
        assert not _constant(after), weight.path
        if weight.path not in constant:
            np.testing.assert_array_equal(after, before[weight.path])


def test_a_torch_module_keeps_no_constant_parameter():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.LayerNorm(4))
    torch.nn.init.zeros_(module[0].bias)
    weight = module[0].weight.detach().clone()
    checkpoint_like.torch_module(module)
    for name, parameter in module.named_parameters():
        assert not _constant(parameter.detach().numpy()), name
    torch.testing.assert_close(module[0].weight.detach(), weight, rtol=0, atol=0)
