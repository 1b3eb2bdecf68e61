"""Images in: decoding, resizing, and pixel values to the [-1, 1] range of the checkpoints."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import ops


def preprocess_input(images):
    """Scales pixel values in [0, 255] (uint8 or float) to [-1, 1].

    ``x / 127.5 - 1``, the convention of the official checkpoints.

    Args:
        images: array or tensor ``(..., height, width, channels)`` with values
            in [0, 255].

    Returns:
        float32 tensor (NumPy array for NumPy input) of the same shape.
    """
    as_numpy = isinstance(images, np.ndarray)
    out = ops.cast(images, "float32") / 127.5 - 1.0
    return ops.convert_to_numpy(out) if as_numpy else out


def decode_image(data, channels):
    """Encoded image bytes (JPEG/PNG/GIF/BMP tensor) -> uint8 ``(h, w, channels)``."""
    image = tf.io.decode_image(data, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return image


def load_image(path, image_size, channels=3):
    """Reads a JPEG/PNG/GIF/BMP file and resizes it to the model's input.

    Args:
        path: str or path. Image file.
        image_size: int or (int, int). Target ``(height, width)``.
        channels: int. 1 (grayscale) or 3 (RGB); the file is converted.

    Returns:
        float32 NumPy array ``(height, width, channels)`` with values in
        [0, 255] (bilinear resize with antialiasing); pass it through
        ``preprocess_input`` before the model.

    Raises:
        ValueError: if the file cannot be decoded as an image.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    data = tf.io.read_file(str(path))
    try:
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
    except tf.errors.InvalidArgumentError as err:
        raise ValueError(f"Cannot decode {path} as an image: {err.message}") from None
    image = tf.image.resize(tf.cast(image, tf.float32), size, antialias=True)
    return np.clip(image.numpy(), 0.0, 255.0)
