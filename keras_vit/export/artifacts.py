"""Runs any exported classifier the same way: pixels in, logits out.

``load_artifact`` opens a ``.keras`` file, a SavedModel (a version folder,
or a TF Serving model folder: its newest version), a ``.tflite``, an
``.onnx`` or an OpenVINO ``.xml`` file, and returns an ``Artifact``: a
callable from float32 images ``(batch, height, width, channels)`` in
[0, 255] to logits ``(batch, classes)``. ``keras-vit predict`` and the
export's parity check use it.

Trust: a ``.keras`` file is loaded in Keras' safe mode (data only, no code).
A SavedModel is a program: loading it runs its graph, which may read and
write files (TensorFlow's security note). Load SavedModels only from
sources you trust; share ``.keras`` files for models of unknown origin.
"""

from __future__ import annotations

import os

import numpy as np

from keras_vit.export.layout import EXPORT_INFO, ExportInfo, version_folder

#: What an artifact's run returns (exported outputs of these names).
OUTPUTS = ("logits", "pre_logits")
#: File extension -> artifact kind.
KINDS = {".keras": "keras", ".tflite": "tflite", ".onnx": "onnx", ".xml": "openvino"}


class Artifact:
    """A loaded model artifact.

    Attributes:
        path: str. The file or folder.
        kind: str. ``"keras"``, ``"saved_model"``, ``"tflite"``, ``"onnx"``
            or ``"openvino"``.
        image_size: (int, int). Input height and width the artifact expects
            (the export size for dynamic-resolution files).
        channels: int. Input channels.
        labels: list of str or None. Class names, when exported with labels.
        precision: str or None. The precision OpenVINO's CPU plugin
            computes in (``"f32"``, ``"bf16"``, ``"f16"``): the hint asked
            for, or ``"f32"`` where this CPU cannot run it; None for the
            other kinds.
    """

    def __init__(self, path, kind, run, image_size, channels, labels=None, precision=None):
        self.path = path
        self.kind = kind
        self._run = run
        self.image_size = tuple(int(s) for s in image_size)
        self.channels = int(channels)
        self.labels = labels
        self.precision = precision

    def outputs(self, images):
        """``{"logits": (batch, classes), "pre_logits": (batch, features)}`` of images.

        ``pre_logits`` (the pooled features the head reads) is missing for
        files exported before the exports returned it.

        Args:
            images: array ``(batch, height, width, channels)`` in [0, 255].

        Raises:
            ValueError: for another rank or channel count, or NaN or
                infinite pixel values.
        """
        images = np.asarray(images, dtype="float32")
        if images.ndim != 4 or images.shape[-1] != self.channels:
            raise ValueError(
                f"{self.kind} artifact {self.path} expects images (batch, height, "
                f"width, {self.channels}); got shape {images.shape}."
            )
        if not np.isfinite(images).all():
            bad = int(np.sum(~np.isfinite(images).all(axis=(1, 2, 3))))
            raise ValueError(
                f"Expected finite pixel values in [0, 255]; {bad} of {len(images)} images "
                "have NaN or infinite values."
            )
        outputs = self._run(images)
        return {name: np.asarray(value, dtype="float32") for name, value in outputs.items()}

    def __call__(self, images):
        """Logits float32 ``(batch, classes)`` of images ``(batch, H, W, C)`` in [0, 255]."""
        return self.outputs(images)["logits"]


def load_artifact(path, precision=None):
    """Opens a ``.keras``, SavedModel, ``.tflite``, ``.onnx`` or OpenVINO ``.xml`` classifier.

    Args:
        path: str or path. A ``.keras`` file, a SavedModel folder (or a TF
            Serving model folder with numbered versions: the newest is
            used), a ``.tflite``, ``.onnx`` or ``.xml`` file written by
            ``keras_vit.export_model``.
        precision: optional str, OpenVINO only: the CPU plugin's
            ``INFERENCE_PRECISION_HINT`` (``"f32"``, ``"bf16"``, ``"f16"``).
            Default: what the export's parity check used
            (``export_info.json``), else ``"f32"``. A CPU without the
            instructions for a hint computes in f32 (a ``KerasVitWarning``
            says so; ``Artifact.precision`` is the one that runs).

    Returns:
        ``Artifact``.

    Raises:
        FileNotFoundError: if the path does not exist.
        ValueError: if it is none of the supported kinds, is not a valid
            file of its kind, or ``precision`` is given for another kind.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model artifact not found: {path}")
    kind = "saved_model" if os.path.isdir(path) else KINDS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise ValueError(
            f"Unsupported model artifact {path!r}: expected a .keras, .tflite, .onnx "
            "or OpenVINO .xml file or a SavedModel folder."
        )
    if precision is not None and kind != "openvino":
        raise ValueError(
            f"precision={precision!r} applies to OpenVINO .xml files only; got a {kind} artifact."
        )
    if kind == "saved_model":
        return _load_saved_model(version_folder(path))
    if kind == "openvino":
        return _load_openvino(path, precision)
    return {"keras": _load_keras, "tflite": _load_tflite, "onnx": _load_onnx}[kind](path)


def _opened(kind, path, open_file):
    """``open_file()``, with a runtime's refusal of a damaged file as a ``ValueError``."""
    try:
        return open_file()
    except Exception as err:  # every runtime raises its own exception types
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ValueError(
            f"{path} is not a valid {kind} file ({type(err).__name__}: {reason}); "
            "export the model again."
        ) from None


def _named(outputs, names):
    """``{"logits": ..., "pre_logits": ...}`` from a runtime's outputs ``{name: value}``.

    tf2onnx and the converters may suffix names (``logits:0``); ``pre_logits``
    is absent from exports made before it was added.
    """
    return {name.split(":")[0]: outputs[name] for name in names if name.split(":")[0] in OUTPUTS}


def _load_keras(path):
    import keras

    from keras_vit.data.images import preprocess_input
    from keras_vit.model.vit import ViT  # registers the layers for safe-mode loading

    model = _opened("Keras", path, lambda: keras.saving.load_model(path, safe_mode=True))
    if not isinstance(model, ViT):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a keras_vit.ViT.")
    model = model.inference_copy()

    def run(images):
        out = model.head_outputs(preprocess_input(images), training=False)
        return {"logits": out["logits"], "pre_logits": out["pre_logits"]}

    return Artifact(path, "keras", run, model.image_size, model.channels)


def _load_saved_model(path):
    import tensorflow as tf

    info = ExportInfo.read(path)
    if info is None:
        raise ValueError(
            f"{path} has no {EXPORT_INFO}: only SavedModels written by "
            "keras_vit.export_model can be run (it tells the input size)."
        )
    loaded = _opened("SavedModel", path, lambda: tf.saved_model.load(path))
    signature = loaded.signatures["serving_default"]
    names = list(signature.structured_outputs)

    def run(images):
        outputs = signature(images=tf.constant(images))
        return _named({name: outputs[name].numpy() for name in names}, names)

    return Artifact(path, "saved_model", run, info.image_size, info.channels, info.labels)


def _load_tflite(path):
    from ai_edge_litert.interpreter import Interpreter

    runner = _opened(
        "TFLite",
        path,
        lambda: Interpreter(model_path=path).get_signature_runner("serving_default"),
    )
    detail = runner.get_input_details()["images"]
    names = list(runner.get_output_details())

    def run(images):
        rows = [_named(runner(images=image[None]), names) for image in images]
        return {name: np.concatenate([row[name] for row in rows]) for name in rows[0]}

    info = ExportInfo.read(path)  # the export size of dynamic-resolution files
    image_size = info.image_size if info else detail["shape"][1:3]
    return Artifact(path, "tflite", run, image_size, detail["shape"][3], info and info.labels)


def _load_onnx(path):
    import onnxruntime

    session = _opened(
        "ONNX",
        path,
        lambda: onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]),
    )
    model_input = session.get_inputs()[0]
    names = [output.name for output in session.get_outputs()]
    wanted = [name for name in names if name.split(":")[0] in OUTPUTS]

    def run(images):
        values = session.run(wanted, {model_input.name: images})
        return _named(dict(zip(wanted, values)), wanted)

    info = ExportInfo.read(path)  # the export size of dynamic-resolution files
    image_size = info.image_size if info else model_input.shape[1:3]
    return Artifact(path, "onnx", run, image_size, model_input.shape[3], info and info.labels)


def _load_openvino(path, precision=None):
    from keras_vit.export.openvino import compile_openvino, compiled_precision

    info = ExportInfo.read(path)
    if precision is None:
        precision = (info and info.openvino_precision) or "f32"
    compiled = compile_openvino(path, precision)  # a damaged file: ValueError
    ports = {n: port for port in compiled.outputs for n in port.get_names() if n in OUTPUTS}
    model_input = compiled.inputs[0].get_partial_shape()

    def run(images):
        outputs = compiled(images)
        return {name: outputs[port] for name, port in ports.items()}

    if info:
        image_size, channels = info.image_size, info.channels
    else:
        image_size = [dim.get_length() for dim in model_input[1:3]]
        channels = model_input[3].get_length()
    precision = compiled_precision(compiled)  # the hint, or f32 where this CPU cannot run it
    return Artifact(path, "openvino", run, image_size, channels, info and info.labels, precision)


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
