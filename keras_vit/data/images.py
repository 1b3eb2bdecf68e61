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

import os

import numpy as np
import tensorflow as tf
from keras import ops

from keras_vit.validation import choice, pair


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


#: The first bytes of each image format ``decode_image`` reads.
IMAGE_SIGNATURES = {
    "JPEG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "BMP": (b"BM",),
}
_HEADER_BYTES = 8
#: How many bad files an error lists by name.
LISTED_FILES = 5


def image_format(header):
    """The format whose signature ``header`` (the first bytes of a file) starts with, or None."""
    for name, signatures in IMAGE_SIGNATURES.items():
        if header.startswith(signatures):
            return name
    return None


def describe_header(header):
    """Why ``header`` is not an image, in a few words (for error messages)."""
    return "an empty file" if not header else f"starts with {header[:_HEADER_BYTES]!r}"


def check_image_files(paths, where):
    """Checks that every file starts like a JPEG, PNG, GIF or BMP (reads 8 bytes of each).

    Cheap enough to run when a folder is listed, so that a stray text file,
    an empty file or a saved error page is named before training starts
    instead of failing in the middle of an epoch.

    Args:
        paths: iterable of str. Image files.
        where: str. The folder or spec, for the message.

    Raises:
        ValueError: listing (up to ``LISTED_FILES``) the files that are not
            images and what they start with.
    """
    bad, count = [], 0
    for path in paths:
        count += 1
        try:
            with open(path, "rb") as file:
                header = file.read(_HEADER_BYTES)
        except OSError as err:
            bad.append(f"{path} (unreadable: {err.strerror})")
            continue
        if image_format(header) is None:
            bad.append(f"{path} ({describe_header(header)})")
    if bad:
        more = f", and {len(bad) - LISTED_FILES} more" if len(bad) > LISTED_FILES else ""
        raise ValueError(
            f"{len(bad)} of {count} files in {where} are not "
            f"{'/'.join(IMAGE_SIGNATURES)} images by their first bytes: "
            f"{'; '.join(bad[:LISTED_FILES])}{more}. Remove or replace them."
        )


def decode_image(data, channels):
    """Encoded image bytes (JPEG/PNG/GIF/BMP tensor) -> uint8 ``(h, w, channels)``.

    TensorFlow decodes GIF (first frame) and BMP to RGB only: for
    ``channels=1`` those are decoded to RGB and converted to ITU-R 601 luma
    (``convert_channels``), rounded to uint8.
    """

    def decode(decoded_channels):
        image = tf.io.decode_image(data, channels=decoded_channels, expand_animations=False)
        image.set_shape([None, None, decoded_channels])
        return image

    if channels != 1:
        return decode(channels)

    def luma():
        gray = convert_channels(tf.cast(decode(3), tf.float32), 1)
        return tf.cast(tf.clip_by_value(tf.round(gray), 0.0, 255.0), tf.uint8)

    rgb_only = tf.strings.substr(data, 0, 2) == b"BM"
    rgb_only |= tf.strings.substr(data, 0, 4) == b"GIF8"
    return tf.cond(rgb_only, luma, lambda: decode(1))


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


def center_crop(image, aspect):
    """The largest centred crop of ``image (h, w, c)`` with ``width / height == aspect``."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    h, w = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    crop_h = tf.cast(tf.round(tf.minimum(h, w / aspect)), tf.int32)
    crop_w = tf.cast(tf.round(tf.minimum(w, h * aspect)), tf.int32)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return image[top : top + crop_h, left : left + crop_w]


#: How ``load_image`` fits a photo to the model's input size.
FIT_MODES = ("resize", "crop")


def load_image(path, image_size, channels=3, fit="resize"):
    """Reads a JPEG/PNG/GIF/BMP file and fits it to the model's input.

    Args:
        path: str or path. Image file.
        image_size: int or (int, int). Target ``(height, width)``.
        channels: int. 1 (grayscale) or 3 (RGB); the file is converted.
        fit: str. ``"resize"`` stretches the whole image to the size (what
            training and ``serve_bytes`` do); ``"crop"`` first takes the
            largest centred crop of the target's aspect ratio, so nothing is
            distorted (what ``keras-vit inspect`` shows).

    Returns:
        float32 NumPy array ``(height, width, channels)`` with values in
        [0, 255] (bilinear resize with antialiasing); pass it through
        ``preprocess_input`` before the model.

    Raises:
        FileNotFoundError, IsADirectoryError: if there is no file at ``path``.
        ValueError: if it cannot be decoded as an image, or for an unknown ``fit``.
    """
    choice(fit, "fit", FIT_MODES)
    size = pair(image_size, "image_size")
    path = os.fspath(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Image file not found: {path}")
    if tf.io.gfile.isdir(path):
        raise IsADirectoryError(f"{path} is a folder, not an image file.")
    data = tf.io.read_file(path)
    try:
        image = decode_image(data, channels)
    except tf.errors.InvalidArgumentError as err:
        raise ValueError(f"Cannot decode {path} as an image: {err.message}") from None
    if fit == "crop":
        image = center_crop(image, size[1] / size[0])
    return fit_image(image, size, channels).numpy()


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
