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

import os
import shutil
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from keras_vit.data.images import sample_images
from keras_vit.export import layout
from keras_vit.export.artifacts import load_artifact
from keras_vit.export.parity import check_parity
from keras_vit.model.vit import ViT

FORMATS = ("saved_model", "tflite", "onnx")


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


def _classifier_copy(model, image_size=None, posemb_interpolation=None, dynamic_resolution=False):
    """``model.inference_copy(...)`` of a classification ``ViT``.

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
    return model.inference_copy(image_size, posemb_interpolation, dynamic_resolution)


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
    static = _classifier_copy(model, image_size, posemb_interpolation)
    served = static
    if dynamic_resolution:
        served = _classifier_copy(model, None, static.posemb_interpolation, dynamic_resolution=True)
    samples = _parity_samples(samples, representative_images, static)
    model_name = model_name or model.name
    model_dir = os.path.join(os.fspath(output_dir), model_name)
    version = layout.claim_version(model_dir, version)
    staging = layout.staging_folder(model_dir, version)
    final = os.path.join(model_dir, str(version))
    try:
        artifacts = {}
        progress = tqdm(
            _plan(formats, quantize), desc="export", unit="artifact", disable=not verbose
        )
        for name, filename in progress:
            progress.set_postfix_str(name)
            path = os.path.normpath(os.path.join(staging, filename))
            _write(
                name,
                served,
                static,
                path,
                labels,
                top_k,
                model_name,
                samples,
                representative_images,
                opset,
            )
            artifacts[name] = path
        info = layout.ExportInfo(
            image_size=tuple(static.image_size),
            channels=static.channels,
            dynamic_resolution=served.dynamic_resolution,
            posemb_interpolation=static.posemb_interpolation,
            num_classes=static.num_classes,
            labels=None if labels is None else [str(label) for label in labels],
        )
        info.write(staging)  # read by load_artifact during the parity check
        rows = check_parity(static, artifacts, samples, load_artifact, verbose)
        info.parity = [row.to_json(staging) for row in rows]
        info.write(staging)
        layout.publish(staging, final)
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


def _write(
    name, served, static, path, labels, top_k, model_name, samples, representative_images, opset
):
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
