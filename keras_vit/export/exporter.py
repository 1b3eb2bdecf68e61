"""Exports a classification ``ViT`` to SavedModel, TFLite and ONNX.

``export_model`` writes every requested artifact of one export into
``<output_dir>/<model_name>/<version>/`` (TF Serving's layout)::

    saved_model.pb, variables/, assets.extra/tf_serving_warmup_requests
    model.tflite, model_float16.tflite, model_dynamic.tflite, model_int8.tflite
    model.onnx
    export_info.json   (sizes, labels, parity table)

It exports a float32 copy of the model (mixed-precision models included)
with a linear head, resizes the position embeddings once when exporting at
another ``image_size`` (``keras_vit.resize_position_embedding``, the same
function as checkpoint loading), runs every artifact on sample images
against that Keras copy and refuses to publish beyond tolerance. Everything
is written to a temporary folder beside the version folder and renamed into
place, so TF Serving never sees a half-written or failing version.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from keras_vit.export.artifacts import EXPORT_INFO, load_artifact
from keras_vit.model.layers import _pair
from keras_vit.model.vit import ViT
from keras_vit.model.posemb import resize_position_embedding
from keras_vit.data.images import preprocess_input

FORMATS = ("saved_model", "tflite", "onnx")

# Pass criteria per artifact: max |logits - keras logits| <= atol + rtol *
# max |keras logits|, and top-1 agreement >= min_agreement.
TOLERANCES = {
    "saved_model": dict(atol=1e-5, rtol=1e-5, min_agreement=1.0),
    "tflite": dict(atol=1e-4, rtol=1e-4, min_agreement=1.0),
    "tflite_float16": dict(atol=1e-2, rtol=1e-2, min_agreement=0.75),
    "tflite_dynamic": dict(atol=np.inf, rtol=0.0, min_agreement=0.75),
    "tflite_int8": dict(atol=np.inf, rtol=0.0, min_agreement=0.75),
    "onnx": dict(atol=1e-4, rtol=1e-4, min_agreement=1.0),
}


class ExportParityError(RuntimeError):
    """An artifact's outputs differ from the Keras model beyond tolerance."""


@dataclass
class ParityRow:
    """One line of the parity table: an artifact against the Keras model."""

    artifact: str
    path: str
    max_abs_diff: float
    top1_agreement: float
    tolerance: float
    min_agreement: float
    ok: bool


@dataclass
class ExportResult:
    """What ``export_model`` wrote.

    Attributes:
        path: str. The version folder ``<output_dir>/<model_name>/<version>``.
        version: int. TF Serving version number.
        artifacts: dict. Artifact name (``saved_model``, ``tflite``,
            ``tflite_int8``, ``onnx``, ...) -> path.
        parity: list of ``ParityRow``.
    """

    path: str
    version: int
    artifacts: dict
    parity: list


def export_copy(model, image_size=None, posemb_interpolation=None, dynamic_resolution=False):
    """A float32 copy of a classification ``ViT`` with a linear head.

    Args:
        model: a built ``keras_vit.ViT`` with a head (``include_top=True``),
            any dtype policy.
        image_size: optional int or (int, int). Input size of the copy; the
            position embeddings are resized once to the new patch grid.
            Ignored with ``dynamic_resolution`` (the embeddings keep the
            trained grid and are resized in the graph).
        posemb_interpolation: optional str. Resize method (``"official"``,
            ``"bilinear"``, ``"bicubic"``, ``"bicubic_hf"``); the model's
            own by default.
        dynamic_resolution: bool. Build the copy for any input size that
            the patch size divides.

    Returns:
        A built float32 ``ViT`` that outputs logits ``(batch, classes)``.

    Raises:
        ValueError: if ``model`` is not a ``ViT`` with a classification head.
    """
    if not isinstance(model, ViT):
        raise ValueError(f"Expected a keras_vit.ViT, got {type(model).__name__}.")
    if model.head is None:
        raise ValueError(
            "Export needs a classification model (include_top=True); got a "
            f"model without head (classifier={model.classifier!r})."
        )
    config = model.get_config()
    config.update(dtype="float32", classifier_activation=None)
    config["dynamic_resolution"] = bool(dynamic_resolution)
    if posemb_interpolation is not None:
        config["posemb_interpolation"] = posemb_interpolation
    if image_size is not None and not dynamic_resolution:
        config["image_size"] = _pair(image_size, "image_size")
    copy = ViT.from_config(config)
    source = {_relative_path(v): v for v in model.weights}
    for variable in copy.weights:
        value = np.asarray(source[_relative_path(variable)].numpy(), dtype="float32")
        if value.shape != tuple(variable.shape):
            value = resize_position_embedding(
                value,
                copy.grid_size,
                num_prefix_tokens=model.num_prefix_tokens,
                method=copy.posemb_interpolation,
                source_grid_shape=model.grid_size,
            )
        variable.assign(value)
    return copy


def _relative_path(variable):
    """``vit_b16/encoderblock_0/...`` -> ``encoderblock_0/...``."""
    return variable.path.split("/", 1)[1]


def sample_images(image_size, channels=3, count=8, seed=0):
    """Deterministic test images for parity checks, in [0, 255].

    Photos shipped with scikit-image (when installed), smooth gradients and
    uniform noise, resized to ``image_size``.

    Args:
        image_size: (int, int). Height and width.
        channels: int. 1 (grayscale) or 3.
        count: int. Number of images.
        seed: int. Seed of the noise images.

    Returns:
        float32 array ``(count, height, width, channels)``.
    """
    import tensorflow as tf

    height, width = _pair(image_size, "image_size")
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
    images = []
    for image in (photos + gradients + noise)[:count]:
        image = tf.image.resize(np.asarray(image, "float32"), (height, width), antialias=True)
        if channels == 1:
            image = tf.image.rgb_to_grayscale(image)
        images.append(np.clip(image.numpy(), 0.0, 255.0))
    return np.stack(images).astype("float32")


def parity_row(name, path, logits, reference):
    """Compares an artifact's logits with the Keras model's (``TOLERANCES``)."""
    criteria = TOLERANCES[name]
    diff = float(np.max(np.abs(logits - reference)))
    agreement = float(np.mean(np.argmax(logits, -1) == np.argmax(reference, -1)))
    tolerance = criteria["atol"] + criteria["rtol"] * float(np.max(np.abs(reference)))
    ok = diff <= tolerance and agreement >= criteria["min_agreement"]
    return ParityRow(name, path, diff, agreement, tolerance, criteria["min_agreement"], ok)


def format_parity(rows):
    """The parity table as text, one artifact per line."""
    lines = [f"{'artifact':<16}{'max_abs_diff':>14}{'tolerance':>12}{'top1_agree':>12}  status"]
    for row in rows:
        lines.append(
            f"{row.artifact:<16}{row.max_abs_diff:>14.3e}{row.tolerance:>12.1e}"
            f"{row.top1_agreement:>12.1%}  {'ok' if row.ok else 'FAIL'}"
        )
    return "\n".join(lines)


def export_model(
    model,
    output_dir,
    formats=("saved_model",),
    *,
    model_name=None,
    version=None,
    image_size=None,
    posemb_interpolation=None,
    dynamic_resolution=False,
    quantize=(),
    labels=None,
    representative_images=None,
    samples=None,
    top_k=5,
    opset=17,
    verbose=True,
):
    """Exports ``model`` and checks every artifact against it.

    Args:
        model: a built classification ``keras_vit.ViT`` (any dtype policy).
        output_dir: str. Base folder; the export lands in
            ``<output_dir>/<model_name>/<version>/``.
        formats: iterable of ``"saved_model"``, ``"tflite"``, ``"onnx"``.
            The SavedModel is always written (a TF Serving version folder
            must hold one); the others are added next to it.
        model_name: str. Defaults to ``model.name``.
        version: optional int. Defaults to the next free number; an existing
            version is never overwritten.
        image_size: optional int or (int, int). Export size (position
            embeddings resized once); the model's by default.
        posemb_interpolation: optional str. Resize method of the position
            embeddings (``"official"``, ``"bilinear"``, ``"bicubic"``,
            ``"bicubic_hf"``); the model's by default.
        dynamic_resolution: bool. The SavedModel (``serving_default``,
            ``serve_uint8``), TFLite and ONNX files accept any height/width
            the patch size divides and resize the position embeddings in
            the graph (same numbers as the static path); ``serve_bytes``
            resizes images to ``image_size``, where parity is checked.
        quantize: iterable of ``"float16"``, ``"dynamic"``, ``"int8"``:
            extra TFLite files next to the float32 one.
        labels: optional list of class names (``top_k_labels`` output).
        representative_images: array ``(n, H, W, C)`` in [0, 255] at the
            export size; needed for ``"int8"``, also used as parity samples.
        samples: optional array ``(n, H, W, C)`` in [0, 255]: parity and
            warm-up inputs (``sample_images`` by default).
        top_k: int. Classes in the SavedModel's top-k outputs.
        opset: int. ONNX opset (<= 18).
        verbose: bool. Show progress and print the parity table.

    Returns:
        ``ExportResult``.

    Raises:
        ValueError: for unknown formats/quantizations, an existing
            ``version`` or other bad arguments.
        ExportParityError: if an artifact differs beyond ``TOLERANCES``; no
            version folder is written then.
    """
    from keras_vit.export.tflite import QUANTIZATIONS

    # The SavedModel is always written: it is what TF Serving loads from a
    # version folder, so a version without it would break the server.
    requested = _checked(formats, FORMATS, "format")
    formats = ("saved_model",) + tuple(f for f in requested if f != "saved_model")
    quantize = _checked(quantize, QUANTIZATIONS[1:], "quantization")
    if quantize and "tflite" not in formats:
        raise ValueError(f"quantize={quantize} needs the 'tflite' format; got formats {formats}.")
    if "int8" in quantize and representative_images is None:
        raise ValueError(
            "quantize='int8' needs representative_images (n, H, W, C) in [0, 255] "
            "for calibration; got None."
        )
    static = export_copy(model, image_size, posemb_interpolation)
    served = static
    if dynamic_resolution:
        served = export_copy(model, None, static.posemb_interpolation, dynamic_resolution=True)
    samples = _parity_samples(samples, representative_images, static)
    model_name = model_name or model.name
    model_dir = os.path.join(os.fspath(output_dir), model_name)
    version = next_free_version(model_dir, version)
    os.makedirs(model_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir)
    final = os.path.join(model_dir, str(version))
    try:
        artifacts = {}
        progress = tqdm(_plan(formats, quantize), desc="export", unit="artifact", disable=not verbose)
        for name, filename in progress:
            progress.set_postfix_str(name)
            path = os.path.normpath(os.path.join(staging, filename))
            _write(name, served, static, path, labels, top_k, model_name, samples,
                   representative_images, opset)
            artifacts[name] = path
        _write_info(staging, static, served, labels, rows=[])  # read by load_artifact
        rows = _check_parity(static, artifacts, samples, verbose)
        _write_info(staging, static, served, labels, rows)
        _publish(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    artifacts = {
        name: os.path.normpath(os.path.join(final, os.path.relpath(path, staging)))
        for name, path in artifacts.items()
    }
    for row in rows:
        row.path = artifacts[row.artifact]
    return ExportResult(final, version, artifacts, rows)


def _parity_samples(samples, representative_images, static):
    """Parity inputs: ``samples``, else the calibration images, else ``sample_images``."""
    if samples is None:
        samples = representative_images
    if samples is None:
        samples = sample_images(static.image_size, static.channels)
    samples = np.asarray(samples, dtype="float32")
    expected = (*static.image_size, static.channels)
    if samples.ndim != 4 or samples.shape[1:] != expected:
        raise ValueError(
            f"Sample/representative images must have shape (n, {expected[0]}, "
            f"{expected[1]}, {expected[2]}); got {samples.shape}."
        )
    return samples


def _check_parity(static, artifacts, samples, verbose):
    """Runs every artifact on ``samples``; raises ``ExportParityError`` beyond tolerance."""
    reference = static(preprocess_input(samples), training=False).numpy()
    rows = [
        parity_row(name, path, load_artifact(path)(samples), reference)
        for name, path in artifacts.items()
    ]
    if verbose:
        print(format_parity(rows))
    if not all(row.ok for row in rows):
        raise ExportParityError(
            "Exported artifacts differ from the Keras model beyond "
            f"tolerance; nothing was written.\n{format_parity(rows)}"
        )
    return rows


def _publish(staging, final):
    """Renames the finished staging folder to the version folder (atomic)."""
    if os.path.exists(final):
        raise FileExistsError(f"Version folder {final} appeared during the export.")
    os.chmod(staging, 0o755)  # mkdtemp makes it private; servers read it
    os.rename(staging, final)


def next_free_version(model_dir, version=None):
    """``version`` if it is free under ``model_dir``, else the next number.

    Raises:
        ValueError: if ``version`` exists (never overwritten) or is not a
            positive int.
    """
    from keras_vit.export.saved_model import next_version

    if version is None:
        return next_version(model_dir)
    if int(version) < 1:
        raise ValueError(f"version must be a positive int, got {version!r}.")
    if os.path.exists(os.path.join(model_dir, str(int(version)))):
        raise ValueError(
            f"Version {version} already exists in {model_dir}; exports never "
            "overwrite a version. Omit the version to take the next free one."
        )
    return int(version)


def _checked(values, allowed, what):
    values = tuple(values or ())
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"Unknown {what} {unknown}; expected some of {allowed}.")
    return values


def _plan(formats, quantize):
    """``(artifact name, file name)`` of every artifact to write."""
    steps = []
    if "saved_model" in formats:
        steps.append(("saved_model", "."))
    if "tflite" in formats:
        steps.append(("tflite", "model.tflite"))
        steps += [(f"tflite_{q}", f"model_{q}.tflite") for q in quantize]
    if "onnx" in formats:
        steps.append(("onnx", "model.onnx"))
    return steps


def _write(name, served, static, path, labels, top_k, model_name, samples,
           representative_images, opset):
    if name == "saved_model":
        from keras_vit.export.saved_model import write_saved_model

        write_saved_model(served, path, labels, top_k, static.image_size, model_name, samples[:2])
    elif name.startswith("tflite"):
        from keras_vit.export.tflite import convert_tflite

        quantization = name.partition("_")[2] or "float32"
        convert_tflite(served, path, quantization, representative_images)
    else:
        from keras_vit.export.onnx import convert_onnx

        convert_onnx(served, path, opset)


def _row_json(row, folder):
    """A parity row as strict JSON: relative path, no tolerance when unbounded."""
    tolerance = row.tolerance if np.isfinite(row.tolerance) else None
    return {**asdict(row), "path": os.path.relpath(row.path, folder), "tolerance": tolerance}


def _write_info(folder, static, served, labels, rows):
    info = dict(
        image_size=list(static.image_size),
        channels=static.channels,
        dynamic_resolution=served.dynamic_resolution,
        posemb_interpolation=static.posemb_interpolation,
        num_classes=static.num_classes,
        labels=None if labels is None else [str(label) for label in labels],
        parity=[_row_json(row, folder) for row in rows],
    )
    with open(os.path.join(folder, EXPORT_INFO), "w") as file:
        json.dump(info, file, indent=1)
