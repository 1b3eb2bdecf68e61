"""Images in: decoding, fitting to a model's input, and the [-1, 1] scaling of the checkpoints.

One way for every path into a model (training and evaluation streams,
``load_image``, the SavedModel's ``serve_bytes``, int8 calibration, export
parity samples, few-shot features):

- ``decode_image``: encoded bytes -> uint8 ``(h, w, channels)``;
- ``fit_image``: an image (or batch) in [0, 255] -> float32 at the model's
  size and channels (channels converted, antialiased bilinear resize);
- ``preprocess_input``: [0, 255] -> [-1, 1] (``x / 127.5 - 1``).

Everything is written with TensorFlow image ops, so the same functions run
eagerly, in ``tf.data`` and inside exported graphs.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import ops

from keras_vit.validation import pair


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


def convert_channels(image, channels):
    """A float image or batch ``(..., c)`` with 1, 3 or 4 (RGBA) channels -> ``channels`` (1 or 3).

    Grayscale is replicated to RGB; RGB becomes ITU-R 601 luma
    (``tf.image.rgb_to_grayscale``); an alpha channel is dropped.

    Raises:
        ValueError: for other channel counts.
    """
    have = image.shape[-1]
    if have == 4:
        image, have = image[..., :3], 3
    if have == channels:
        return image
    if have == 3 and channels == 1:
        return tf.image.rgb_to_grayscale(image)
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    raise ValueError(f"Cannot convert images with {have} channels to {channels}.")


def fit_image(image, image_size, channels):
    """An image ``(h, w, c)`` or batch ``(n, h, w, c)`` in [0, 255] -> the model's input.

    Channels converted (``convert_channels``), then resized with antialiased
    bilinear interpolation and clipped to [0, 255].

    Args:
        image: uint8 or float array or tensor.
        image_size: int or (int, int). Target ``(height, width)``.
        channels: int. Target channels (1 or 3).

    Returns:
        float32 tensor ``(height, width, channels)`` (or with the batch axis).
    """
    image = convert_channels(tf.cast(image, tf.float32), channels)
    image = tf.image.resize(image, pair(image_size, "image_size"), antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0)


def load_image(path, image_size, channels=3):
    """Reads a JPEG/PNG/GIF/BMP file and fits it to the model's input.

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
    data = tf.io.read_file(str(path))
    try:
        image = decode_image(data, channels)
    except tf.errors.InvalidArgumentError as err:
        raise ValueError(f"Cannot decode {path} as an image: {err.message}") from None
    return fit_image(image, image_size, channels).numpy()


def sample_images(image_size, channels=3, count=8, seed=0):
    """Deterministic test images (parity checks, warm-up requests), in [0, 255].

    Photos shipped with scikit-image (when installed), a smooth gradient and
    uniform noise, fitted to ``image_size`` and ``channels``.

    Args:
        image_size: int or (int, int). Height and width.
        channels: int. 1 (grayscale) or 3.
        count: int. Number of images.
        seed: int. Seed of the noise images.

    Returns:
        float32 array ``(count, height, width, channels)``.
    """
    rng = np.random.default_rng(seed)
    photos = []
    try:
        from skimage import data

        photos = [data.chelsea(), data.astronaut(), data.coffee()]
    except ImportError:
        pass
    ramp = np.linspace(0.0, 255.0, 64, dtype="float32")
    rows, cols = np.meshgrid(ramp, ramp[::-1])
    gradients = [np.stack([rows, cols, np.outer(ramp, ramp) / 255.0], -1)]
    noise = [rng.uniform(0, 255, (64, 64, 3)).astype("float32") for _ in range(count)]
    images = (photos + gradients + noise)[:count]
    return np.stack([fit_image(image, image_size, channels).numpy() for image in images])
