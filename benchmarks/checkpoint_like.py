"""Random weights with no parameter left at a constant, as in a trained checkpoint.

Every framework initialises a ViT's biases to 0 and its norms to scale 1,
offset 0; no trained checkpoint keeps them there. Graph compilers fold
``x + 0`` and ``x * 1`` away, and what is left may run other kernels than a
real model's: under TensorFlow's oneDNN, a QKV product whose zero bias was
folded runs as a bare MatMul instead of a fused MatMul + BiasAdd, and a
LayerNorm with unit scale and zero offset no longer matches the remapper's
LayerNorm fusion. A benchmark of such a model measures a model nobody serves.

Every implementation in ``benchmarks/`` therefore perturbs its freshly
initialised parameters the same way: each one whose values are all equal
gets ``N(0, STD)`` noise added (a bias ``N(0, 0.02)``, a norm scale
``1 + N(0, 0.02)``); parameters that are already random are left unchanged.
"""

from __future__ import annotations

import numpy as np

STD = 0.02


def perturbed(values, rng):
    """``values`` plus ``N(0, STD)`` noise if all its entries are equal, else ``values``.

    Args:
        values: float array of any shape.
        rng: ``numpy.random.Generator``.

    Returns:
        a new float array of ``values``' shape and dtype, or the NumPy array
        ``values`` itself when it is left unchanged.
    """
    values = np.asarray(values)
    if values.size and np.all(values == values.flat[0]):
        noise = rng.normal(0.0, STD, values.shape)
        return (values + noise).astype(values.dtype)
    return values


def keras_model(model, seed=0):
    """Perturbs a Keras model's constant trainable weights in place; returns the model."""
    rng = np.random.default_rng(seed)
    for weight in model.trainable_weights:
        values = weight.numpy()
        new = perturbed(values, rng)
        if new is not values:
            weight.assign(new)
    return model


def torch_module(module, seed=0):
    """Perturbs a ``torch.nn.Module``'s constant parameters in place; returns the module."""
    import torch

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            values = parameter.detach().cpu().numpy()
            new = perturbed(values, rng)
            if new is not values:
                parameter.copy_(torch.from_numpy(new))
    return module
