"""TF Serving SavedModels: signatures, warm-up requests, version folders.

A served model lives in ``<base>/<model_name>/<version>/`` (TF Serving's
layout). Its SavedModel has three signatures:

- ``serving_default``: ``images`` float32 ``(batch, height, width,
  channels)`` with values in [0, 255] (REST: pixels as JSON numbers);
- ``serve_uint8``: the same with uint8 ``images`` (gRPC clients sending
  raw pixels);
- ``serve_bytes``: ``image_bytes`` string ``(batch,)`` of encoded JPEG, PNG,
  GIF (first frame) or BMP images (REST: ``{"b64": "..."}``), decoded and
  resized inside. Images larger than ``max_image_pixels`` (height x width,
  read from the file's header before anything is decoded) are refused.

All return ``logits`` and ``probabilities`` ``(batch, classes)``,
``pre_logits`` ``(batch, features)`` (the pooled features the head reads),
``top_k_ids`` (int32) and ``top_k_probabilities`` ``(batch, k)``, and
``top_k_labels`` (string) when labels are given. Preprocessing
(``x / 127.5 - 1``) is inside the graph; images with NaN or infinite pixels
are refused (``InvalidArgumentError``) instead of giving NaN scores.

A SavedModel is a program: loading one runs its graph, which can read and
write files (TensorFlow's security note, ``SECURITY.md``). Load only
SavedModels you trust; for files of unknown origin use a ``.keras`` file,
which ``keras.saving.load_model(..., safe_mode=True)`` loads as data.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_vit.data.images import decode_image, fit_image, preprocess_input
from keras_vit.messages import KerasVitWarning
from keras_vit.validation import integer

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")

#: Default limit of ``serve_bytes``: height x width of an encoded image (a
#: 4096 x 4096 photo). Decoding and resizing one costs about 15 bytes per
#: pixel (about 250 MB at the limit).
MAX_IMAGE_PIXELS = 4096 * 4096

# Leading bytes of the encoded formats serve_bytes takes.
_MAGIC = {
    "JPEG": b"\xff\xd8\xff",
    "PNG": b"\x89PNG\r\n\x1a\n",
    "GIF": b"GIF8",
    "BMP": b"BM",
}
_HEADER_BYTES = 32


def classify_fn(model):
    """A function from pixels to class scores around a classification ``ViT``.

    Args:
        model: a built float32 ``keras_vit.ViT`` with a linear head.

    Returns:
        A function taking float32 images ``(batch, height, width, channels)``
        in [0, 255] and returning ``{"logits", "probabilities"}``, each
        ``(batch, classes)``, and ``"pre_logits"`` ``(batch, features)``: the
        pooled features the head reads, so that an export's parity check
        covers the whole network even when the head is untrained.
    """

    def classify(images):
        out = model.head_outputs(preprocess_input(images), training=False)
        logits = out["logits"]
        return {
            "logits": logits,
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "pre_logits": out["pre_logits"],
        }

    return classify


def checked_images(images, model):
    """``images`` after in-graph checks of rank, channels and size.

    The signature accepts any shape (a TensorSpec shape would be trusted by
    the graph optimiser, and a wrong rank then crashes the oneDNN
    convolution instead of raising), so the checks here raise
    ``InvalidArgumentError`` with a message before the model runs. NaN
    and infinite pixels are refused the same way: they would give NaN
    scores with confident-looking top-k ids.

    Args:
        images: float32 tensor of unknown shape.
        model: the served ``ViT`` (``image_size``, ``channels``, ``stride``,
            ``dynamic_resolution``).

    Returns:
        ``images`` with static shape ``(batch, height, width, channels)``.
    """
    height, width = (None, None) if model.dynamic_resolution else model.image_size
    expected = f"(batch, {height or 'height'}, {width or 'width'}, {model.channels})"
    # Padded so that indexing works whatever the rank; the rank is checked too.
    shape = tf.concat([tf.shape(images), tf.zeros([4], tf.int32)], axis=0)
    ok = tf.equal(tf.rank(images), 4) & tf.equal(shape[3], model.channels)
    if model.dynamic_resolution:
        for axis, step in ((1, model.stride[0]), (2, model.stride[1])):
            ok = ok & (shape[axis] > 0) & tf.equal(shape[axis] % step, 0)
        expected += f" with height and width positive multiples of the patch size {model.stride}"
    else:
        ok = ok & tf.equal(shape[1], height) & tf.equal(shape[2], width)
    message = f"Expected images of shape {expected}; got shape"
    check = tf.debugging.Assert(ok, [message, tf.shape(images)], summarize=8)
    with tf.control_dependencies([check]):
        images = tf.ensure_shape(tf.identity(images), (None, height, width, model.channels))
    finite = tf.debugging.Assert(
        tf.reduce_all(tf.math.is_finite(images)),
        ["Expected finite pixel values in [0, 255]; got images with NaN or infinite values."],
    )
    with tf.control_dependencies([finite]):
        return tf.identity(images)


def _header_int(header, start, length, big_endian=False):
    """The unsigned integer in bytes ``start..start+length`` of ``header`` (uint8 vector), int64."""
    digits = tf.cast(header[start : start + length], tf.int64)
    order = range(length - 1, -1, -1) if big_endian else range(length)
    return tf.add_n([digits[i] * 256**power for power, i in enumerate(order)])


def encoded_size(data):
    """``(height, width)`` int64 of an encoded image, read from its header (nothing decoded).

    Args:
        data: string scalar tensor, a JPEG, PNG, GIF or BMP file.

    Returns:
        ``(is_supported, height, width)`` scalar tensors; height and width
        are 0 for unsupported formats. A JPEG whose header cannot be read
        raises ``InvalidArgumentError``.
    """
    padded = tf.strings.substr(tf.strings.join([data, b"\0" * _HEADER_BYTES]), 0, _HEADER_BYTES)
    header = tf.io.decode_raw(padded, tf.uint8)
    header.set_shape([_HEADER_BYTES])
    kinds = {k: tf.equal(tf.strings.substr(data, 0, len(m)), m) for k, m in _MAGIC.items()}

    def jpeg():
        shape = tf.cast(tf.io.extract_jpeg_shape(data), tf.int64)
        return shape[0], shape[1]

    def signed(value):  # BMP heights are negative for top-down rows
        return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

    cases = [
        (
            kinds["PNG"],
            lambda: (_header_int(header, 20, 4, True), _header_int(header, 16, 4, True)),
        ),
        (kinds["GIF"], lambda: (_header_int(header, 8, 2), _header_int(header, 6, 2))),
        (kinds["BMP"], lambda: (signed(_header_int(header, 22, 4)), _header_int(header, 18, 4))),
    ]
    size = (tf.constant(0, tf.int64), tf.constant(0, tf.int64))
    size = tf.cond(kinds["JPEG"], jpeg, lambda: size)
    for kind, read in cases:
        size = tf.cond(kind, read, lambda size=size: size)
    supported = tf.reduce_any(tf.stack(list(kinds.values())))
    return supported, size[0], size[1]


def decode_served_image(data, image_size, channels, max_pixels=MAX_IMAGE_PIXELS):
    """Decodes one encoded image to float32 ``(height, width, channels)`` at ``image_size``.

    The format and the size are checked from the header before decoding:
    other formats and images over ``max_pixels`` raise
    ``InvalidArgumentError`` with a message. Decoded by
    ``keras_vit.data.images.decode_image``, as in training (GIF and BMP to
    grayscale through RGB).
    """
    supported, height, width = encoded_size(data)
    first_bytes = tf.io.decode_raw(tf.strings.substr(data, 0, 8), tf.uint8)
    checks = [
        tf.debugging.Assert(
            supported,
            [
                "serve_bytes expects encoded JPEG, PNG, GIF or BMP images; got bytes starting with",
                first_bytes,
            ],
            summarize=8,
        ),
        tf.debugging.Assert(
            height * width <= max_pixels,
            [
                f"serve_bytes accepts images of at most {max_pixels} pixels (height x width, "
                "max_image_pixels at export); got height and width",
                height,
                width,
            ],
        ),
    ]
    with tf.control_dependencies(checks):
        data = tf.identity(data)
    return fit_image(decode_image(data, channels), image_size, channels)


class ServingFunctions:
    """The signatures of a served classification ``ViT``.

    Args:
        model: a built float32 ``keras_vit.ViT`` with a linear head.
        labels: optional list of str, one per class.
        top_k: int. Number of top classes returned.
        image_size: optional (int, int). Size ``serve_bytes`` resizes to;
            the model's ``image_size`` by default (set it for a
            ``dynamic_resolution`` model served at another size).
        max_image_pixels: int. Largest height x width ``serve_bytes``
            decodes (``MAX_IMAGE_PIXELS`` by default).
    """

    def __init__(
        self, model, labels=None, top_k=5, image_size=None, max_image_pixels=MAX_IMAGE_PIXELS
    ):
        if labels is not None and len(labels) != model.num_classes:
            raise ValueError(
                f"Got {len(labels)} labels for a model with {model.num_classes} "
                "classes; pass one label per class."
            )
        self.model = model
        self.labels = None if labels is None else [str(label) for label in labels]
        self.top_k = max(1, min(int(top_k), model.num_classes))
        self.classify = classify_fn(model)
        self.image_size = tuple(image_size or model.image_size)
        self.max_image_pixels = integer(max_image_pixels, "max_image_pixels", minimum=1)

    def serving_default(self, images):
        """``images`` float32 ``(batch, height, width, channels)`` in [0, 255].

        The export size (any multiple of the patch size for
        ``dynamic_resolution``); other shapes raise ``InvalidArgumentError``.
        """
        outputs = self.classify(checked_images(images, self.model))
        top = tf.math.top_k(outputs["probabilities"], k=self.top_k)
        outputs["top_k_ids"] = top.indices
        outputs["top_k_probabilities"] = top.values
        if self.labels is not None:
            outputs["top_k_labels"] = tf.gather(tf.constant(self.labels), top.indices)
        return outputs

    def serve_uint8(self, images):
        """``images`` uint8 ``(batch, height, width, channels)``: as ``serving_default``."""
        return self.serving_default(tf.cast(images, tf.float32))

    def serve_bytes(self, image_bytes):
        """``image_bytes`` string ``(batch,)``: encoded JPEG, PNG, GIF or BMP images.

        Each image is checked (format, at most ``max_image_pixels``), decoded
        (converted to the model's channels), resized to the export size with
        antialiased bilinear interpolation (as ``keras_vit.load_image``) and
        classified like ``serving_default``.
        """
        image_size = self.image_size
        channels = self.model.channels
        limit = self.max_image_pixels
        images = tf.map_fn(
            lambda data: decode_served_image(data, image_size, channels, limit),
            image_bytes,
            fn_output_signature=tf.TensorSpec((*image_size, channels), tf.float32),
        )
        return self.serving_default(images)

    def archive(self):
        """A ``keras.export.ExportArchive`` with the three signatures."""
        archive = keras.export.ExportArchive()
        archive.track(self.model)
        endpoints = (
            ("serving_default", self.serving_default, tf.float32, "images"),
            ("serve_uint8", self.serve_uint8, tf.uint8, "images"),
            ("serve_bytes", self.serve_bytes, tf.string, "image_bytes"),
        )
        for name, function, dtype, key in endpoints:
            shape = (None,) if dtype == tf.string else None  # image shape checked in-graph
            archive.add_endpoint(
                name, function, input_signature=[tf.TensorSpec(shape, dtype, name=key)]
            )
        return archive


def write_saved_model(
    model,
    path,
    labels=None,
    top_k=5,
    image_size=None,
    model_name="vit",
    warmup_images=None,
    max_image_pixels=MAX_IMAGE_PIXELS,
):
    """Writes the TF Serving SavedModel of ``model`` to ``path``.

    Args:
        model: a built float32 ``keras_vit.ViT`` with a linear head.
        path: str. Target folder (created; normally a temporary folder that
            the caller renames into ``<base>/<model_name>/<version>``).
        labels: optional list of str, one per class.
        top_k: int. Classes in the top-k outputs.
        image_size: optional (int, int). Size ``serve_bytes`` resizes to.
        model_name: str. Model name in the warm-up requests.
        warmup_images: optional uint8/float array ``(n, height, width,
            channels)`` in [0, 255] at the export size; written as warm-up
            requests for every signature when the ``tensorflow_serving``
            protos are installed (``pip install --no-deps
            tensorflow-serving-api``), else skipped with a notice: TF Serving
            serves without them, only the first requests are slower.
        max_image_pixels: int. Largest height x width ``serve_bytes`` decodes.
    """
    functions = ServingFunctions(model, labels, top_k, image_size, max_image_pixels)
    functions.archive().write_out(path, verbose=False)
    if warmup_images is None:
        return
    if importlib.util.find_spec("tensorflow_serving") is None:
        warnings.warn(
            "tensorflow-serving-api is not installed, so no warm-up requests "
            f"were written to {WARMUP_FILE}. Install it with `pip install --no-deps "
            "tensorflow-serving-api` (plain `pip install` would pull a second, "
            "full tensorflow).",
            KerasVitWarning,
            stacklevel=2,
        )
        return
    write_warmup_requests(os.path.join(path, WARMUP_FILE), warmup_images, model_name)


def write_warmup_requests(path, images, model_name):
    """Writes TF Serving warm-up ``PredictionLog`` records for every signature.

    Args:
        path: str. Usually ``<version>/assets.extra/tf_serving_warmup_requests``.
        images: array ``(n, height, width, channels)`` in [0, 255].
        model_name: str. ``model_spec.name`` of the requests.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    pixels = np.round(np.asarray(images)).astype("uint8")
    encoded = [tf.io.encode_png(image).numpy() for image in pixels]
    requests = {
        "serving_default": ("images", tf.make_tensor_proto(np.asarray(images, "float32"))),
        "serve_uint8": ("images", tf.make_tensor_proto(pixels)),
        "serve_bytes": ("image_bytes", tf.make_tensor_proto(encoded, dtype=tf.string)),
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature, (key, tensor) in requests.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature),
                inputs={key: tensor},
            )
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
