"""Runs any exported classifier the same way: pixels in, logits out.

``load_artifact`` opens a ``.keras`` file, a SavedModel (a version folder,
or a TF Serving model folder: its newest version), a ``.tflite`` or an
``.onnx`` file, and returns an ``Artifact``: a callable from float32 images
``(batch, height, width, channels)`` in [0, 255] to logits ``(batch,
classes)``. ``keras-vit predict`` and the export's parity check use it.
"""

from __future__ import annotations

import os

import numpy as np

from keras_vit.export.layout import EXPORT_INFO, ExportInfo, version_folder


class Artifact:
    """A loaded model artifact.

    Attributes:
        path: str. The file or folder.
        kind: str. ``"keras"``, ``"saved_model"``, ``"tflite"`` or ``"onnx"``.
        image_size: (int, int). Input height and width the artifact expects
            (the export size for dynamic-resolution SavedModels).
        channels: int. Input channels.
        labels: list of str or None. Class names, when exported with labels.
    """

    def __init__(self, path, kind, run, image_size, channels, labels=None):
        self.path = path
        self.kind = kind
        self._run = run
        self.image_size = tuple(int(s) for s in image_size)
        self.channels = int(channels)
        self.labels = labels

    def __call__(self, images):
        """Logits float32 ``(batch, classes)`` of images ``(batch, H, W, C)`` in [0, 255]."""
        images = np.asarray(images, dtype="float32")
        if images.ndim != 4 or images.shape[-1] != self.channels:
            raise ValueError(
                f"{self.kind} artifact {self.path} expects images (batch, height, "
                f"width, {self.channels}); got shape {images.shape}."
            )
        return np.asarray(self._run(images), dtype="float32")


def load_artifact(path):
    """Opens a ``.keras``, SavedModel, ``.tflite`` or ``.onnx`` classifier.

    Args:
        path: str or path. A ``.keras`` file, a SavedModel folder (or a TF
            Serving model folder with numbered versions: the newest is
            used), a ``.tflite`` or an ``.onnx`` file written by
            ``keras_vit.export_model``.

    Returns:
        ``Artifact``.

    Raises:
        FileNotFoundError: if the path does not exist.
        ValueError: if it is none of the supported kinds.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model artifact not found: {path}")
    if os.path.isdir(path):
        return _load_saved_model(version_folder(path))
    loaders = {".keras": _load_keras, ".tflite": _load_tflite, ".onnx": _load_onnx}
    extension = os.path.splitext(path)[1].lower()
    if extension not in loaders:
        raise ValueError(
            f"Unsupported model artifact {path!r}: expected a .keras, .tflite or "
            ".onnx file or a SavedModel folder."
        )
    return loaders[extension](path)


def _load_keras(path):
    import keras

    from keras_vit.data.images import preprocess_input
    from keras_vit.model.vit import ViT  # registers the layers for safe-mode loading

    model = keras.saving.load_model(path, safe_mode=True)
    if not isinstance(model, ViT):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a keras_vit.ViT.")
    model = model.inference_copy()

    def run(images):
        return model(preprocess_input(images), training=False)

    return Artifact(path, "keras", run, model.image_size, model.channels)


def _load_saved_model(path):
    import tensorflow as tf

    info = ExportInfo.read(path)
    if info is None:
        raise ValueError(
            f"{path} has no {EXPORT_INFO}: only SavedModels written by "
            "keras_vit.export_model can be run (it tells the input size)."
        )
    signature = tf.saved_model.load(path).signatures["serving_default"]

    def run(images):
        return signature(images=tf.constant(images))["logits"].numpy()

    return Artifact(path, "saved_model", run, info.image_size, info.channels, info.labels)


def _load_tflite(path):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    detail = runner.get_input_details()["images"]

    def run(images):
        return np.concatenate([runner(images=image[None])["logits"] for image in images])

    info = ExportInfo.read(path)  # the export size of dynamic-resolution files
    image_size = info.image_size if info else detail["shape"][1:3]
    return Artifact(path, "tflite", run, image_size, detail["shape"][3], info and info.labels)


def _load_onnx(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    outputs = [output.name for output in session.get_outputs()]
    logits = next(name for name in outputs if name.startswith("logits"))

    def run(images):
        return session.run([logits], {model_input.name: images})[0]

    info = ExportInfo.read(path)  # the export size of dynamic-resolution files
    image_size = info.image_size if info else model_input.shape[1:3]
    return Artifact(path, "onnx", run, image_size, model_input.shape[3], info and info.labels)


def top_k(logits, k=5, labels=None):
    """The ``k`` most probable classes of each row of ``logits``.

    Args:
        logits: array ``(batch, classes)``.
        k: int. Number of classes per row.
        labels: optional list of class names.

    Returns:
        list (one per row) of lists of ``(class_id, label_or_None,
        probability)``, most probable first.
    """
    logits = np.asarray(logits, dtype="float64")
    probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    return [
        [(int(i), labels[i] if labels else None, float(row[i])) for i in ids]
        for row, ids in zip(probabilities, order)
    ]
