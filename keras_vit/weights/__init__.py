"""Loading weights into keras-vit models."""

from __future__ import annotations

import os


def load_weights(model, weights):
    """Loads ``weights`` into a built ``ViT``.

    Args:
        model: a built ``keras_vit.ViT``.
        weights: path to a Keras ``.weights.h5`` or ``.keras`` file.

    Raises:
        FileNotFoundError: if the path does not exist.
        ValueError: for an unsupported file type.
    """
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights file not found: {path}")
    if path.endswith((".weights.h5", ".keras")):
        model.load_weights(path)
        return model
    raise ValueError(
        f"Unsupported weights file {path!r}: expected a .weights.h5 or .keras file."
    )
