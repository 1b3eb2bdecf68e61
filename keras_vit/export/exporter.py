"""Exports a classification ``ViT`` to SavedModel, TFLite, ONNX and OpenVINO.

``export_model`` writes every requested artifact of one export into
``<output_dir>/<model_name>/<version>/`` (TF Serving's layout)::

    saved_model.pb, variables/, assets.extra/tf_serving_warmup_requests
    model.tflite, model_float16.tflite, model_dynamic.tflite, model_int8.tflite
    model.onnx
    model.xml + model.bin, model_int8.xml + model_int8.bin   (OpenVINO IR)
    export_info.json   (sizes, labels, OpenVINO precision, parity table)

It exports a float32 copy of the model (mixed-precision models included)
with a linear head, resizes the position embeddings once when exporting at
another ``image_size`` (``keras_vit.resize_position_embedding``, the same
function as checkpoint loading), runs every artifact on sample images
against that Keras copy (logits and pre-logits features) and refuses to
publish beyond tolerance. Everything is written to a temporary folder
beside the version folder and renamed into place, so TF Serving never sees
a half-written or failing version. The optional dependencies of every
requested format are checked before anything is built, and the output
folder before any conversion.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from keras_vit import extras
from keras_vit.data.images import sample_images
from keras_vit.export import layout
from keras_vit.export.artifacts import load_artifact
from keras_vit.export.openvino import PRECISIONS as OPENVINO_PRECISIONS
from keras_vit.export.openvino import QUANTIZATIONS as OPENVINO_QUANTIZATIONS
from keras_vit.export.openvino import runs_as
from keras_vit.export.parity import check_parity, criteria_name
from keras_vit.export.saved_model import MAX_IMAGE_PIXELS
from keras_vit.export.tflite import QUANTIZATIONS as TFLITE_QUANTIZATIONS
from keras_vit.memory import release_memory
from keras_vit.messages import KerasVitWarning
from keras_vit.model.vit import ViT
from keras_vit.validation import choice, integer

FORMATS = ("saved_model", "tflite", "onnx", "openvino")
#: The extra artifacts ``quantize`` adds, per format (float32 is always written).
FORMAT_QUANTIZATIONS = {"tflite": TFLITE_QUANTIZATIONS[1:], "openvino": OPENVINO_QUANTIZATIONS[1:]}
#: Every ``quantize`` choice.
QUANTIZE_CHOICES = tuple(dict.fromkeys(q for qs in FORMAT_QUANTIZATIONS.values() for q in qs))
# Optional modules each artifact needs, to write it and to run its parity check.
_REQUIREMENTS = {
    "tflite": (("ai_edge_litert", "export", "TFLite export (its parity check runs LiteRT)"),),
    "onnx": (
        ("tf2onnx", "export", "ONNX export"),
        ("onnx", "export", "ONNX export"),
        ("onnxruntime", "export", "ONNX export"),
    ),
    "openvino": (("openvino", "openvino", "OpenVINO export"),),
    "openvino_int8": (("nncf", "openvino", "OpenVINO int8 quantization"),),
}
# Artifact file name per format (quantized ones: model_<quantization>.<ext>).
_FILES = {
    "saved_model": ".",
    "tflite": "model.tflite",
    "onnx": "model.onnx",
    "openvino": "model.xml",
}


@dataclass
class ExportResult:
    """What ``export_model`` wrote.

    Attributes:
        path: str. The version folder ``<output_dir>/<model_name>/<version>``.
        version: int. TF Serving version number.
        artifacts: dict. Artifact name (``saved_model``, ``tflite``,
            ``tflite_int8``, ``onnx``, ``openvino``, ``openvino_int8``, ...)
            -> path.
        parity: list of ``ParityRow``.
    """

    path: str
    version: int
    artifacts: dict
    parity: list


def _check_model(model):
    """Raises ``ValueError`` unless ``model`` is a classification ``ViT``."""
    if not isinstance(model, ViT):
        raise ValueError(f"Expected a keras_vit.ViT, got {type(model).__name__}.")
    if model.head is None:
        raise ValueError(
            "Export needs a classification model (include_top=True); got a "
            f"model without head (classifier={model.classifier!r})."
        )


def untrained_head(model):
    """True when the head's kernel is all zeros (a fresh head): every image gets the same scores."""
    kernel = getattr(model.head, "kernel", None)
    return kernel is not None and not np.any(np.asarray(kernel))


def plan_artifacts(formats, quantize=()):
    """``[(artifact name, format, quantization, file name)]`` of an export, in writing order.

    The SavedModel always comes first (a TF Serving version folder must hold
    one); each quantization adds an artifact to every requested format that
    offers it.

    Raises:
        ValueError: for unknown formats or quantizations, or a quantization
            that no requested format offers.
    """
    requested = _checked(formats, FORMATS, "format")
    quantize = _checked(quantize, QUANTIZE_CHOICES, "quantization")
    formats = ("saved_model",) + tuple(f for f in FORMATS[1:] if f in requested)
    for quantization in quantize:
        offering = [f for f, q in FORMAT_QUANTIZATIONS.items() if quantization in q]
        if not set(offering) & set(formats):
            raise ValueError(
                f"quantize={quantization!r} needs the {' or '.join(map(repr, offering))} "
                f"format; got formats {formats}."
            )
    plan = []
    for fmt in formats:
        filename = _FILES[fmt]
        plan.append((fmt, fmt, "float32", filename))
        stem, extension = os.path.splitext(filename)
        for quantization in quantize:
            if quantization in FORMAT_QUANTIZATIONS.get(fmt, ()):
                plan.append(
                    (
                        f"{fmt}_{quantization}",
                        fmt,
                        quantization,
                        f"{stem}_{quantization}{extension}",
                    )
                )
    return plan


def required_extras(plan):
    """``(module, extra, feature)`` of every optional module the planned artifacts need."""
    needs = []
    for name, fmt, _, _ in plan:
        for requirement in _REQUIREMENTS.get(fmt, ()) + _REQUIREMENTS.get(name, ()):
            if requirement not in needs:
                needs.append(requirement)
    return needs


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
    openvino_precision="f32",
    max_image_pixels=MAX_IMAGE_PIXELS,
    verbose=True,
):
    """Exports ``model`` and checks every artifact against it.

    Args:
        model: a built classification ``keras_vit.ViT`` (any dtype policy).
        output_dir: str. Base folder; the export lands in
            ``<output_dir>/<model_name>/<version>/``.
        formats: iterable of ``"saved_model"``, ``"tflite"``, ``"onnx"``,
            ``"openvino"``. The SavedModel is always written (a TF Serving
            version folder must hold one); the others are added next to it.
        model_name: str. One folder name (letters, digits, ``.``, ``_``,
            ``-``); defaults to ``model.name``.
        version: optional int. Defaults to the next free number; an existing
            version is never overwritten.
        image_size: optional int or (int, int). Export size (position
            embeddings resized once); the model's by default.
        posemb_interpolation: optional str. Resize method of the position
            embeddings (``"official"``, ``"bilinear"``, ``"bicubic"``,
            ``"bicubic_hf"``); the model's by default.
        dynamic_resolution: bool. The SavedModel (``serving_default``,
            ``serve_uint8``), TFLite, ONNX and OpenVINO files accept any
            height/width the patch size divides and resize the position
            embeddings in the graph (same numbers as the static path);
            ``serve_bytes`` resizes images to ``image_size``, where parity
            is checked.
        quantize: iterable of ``"float16"``, ``"dynamic"`` (TFLite) and
            ``"int8"`` (TFLite full-integer and OpenVINO NNCF): extra files
            next to the float32 ones of the formats that offer them.
        labels: optional list of class names (``top_k_labels`` output).
        representative_images: array ``(n, H, W, C)`` in [0, 255] at the
            export size; needed for ``"int8"`` (calibration of TFLite and
            OpenVINO alike), also used as parity samples.
        samples: optional array ``(n, H, W, C)`` in [0, 255]: parity and
            warm-up inputs (``sample_images`` by default).
        top_k: int. Classes in the SavedModel's top-k outputs.
        opset: int. ONNX opset (<= 18).
        openvino_precision: str. OpenVINO CPU ``INFERENCE_PRECISION_HINT``
            of the parity check, recorded in ``export_info.json`` as
            ``load_artifact``'s default: ``"f32"`` (checked to 1e-4),
            ``"bf16"`` or ``"f16"`` (checked on top-1 agreement where this
            CPU computes in it, to 1e-4 where the plugin runs f32 instead:
            ``keras_vit.export.openvino.runs_as``).
        max_image_pixels: int. Largest height x width ``serve_bytes``
            decodes; larger images are refused before decoding.
        verbose: bool. Show progress and print the parity table.

    Returns:
        ``ExportResult``.

    Raises:
        ValueError: for unknown formats/quantizations, an existing
            ``version``, a model name that is not one folder name, an
            output folder that is a file or not writable, or other bad
            arguments; all before anything is built.
        MissingExtraError: if a requested format's optional dependency is
            not installed (before anything is built).
        ExportParityError: if an artifact differs beyond ``TOLERANCES``; no
            version folder is written then.
    """
    _check_model(model)
    plan = plan_artifacts(formats, quantize)
    int8 = any(quantization == "int8" for _, _, quantization, _ in plan)
    if int8 and representative_images is None:
        raise ValueError(
            "quantize='int8' needs representative_images (n, H, W, C) in [0, 255] "
            "for calibration; got None."
        )
    choice(openvino_precision, "openvino_precision", OPENVINO_PRECISIONS)
    integer(max_image_pixels, "max_image_pixels", minimum=1)
    if labels is not None and len(labels) != model.num_classes:
        raise ValueError(
            f"Got {len(labels)} labels for a model with {model.num_classes} "
            "classes; pass one label per class."
        )
    extras.check(*required_extras(plan))
    model_name = model.name if model_name is None else model_name
    model_dir = layout.model_folder(output_dir, model_name)
    layout.remove_stale_staging(model_dir)
    version = layout.claim_version(model_dir, version)
    static = model.inference_copy(image_size, posemb_interpolation)
    served = static
    if dynamic_resolution:
        served = model.inference_copy(None, static.posemb_interpolation, dynamic_resolution=True)
    samples = _parity_samples(samples, representative_images, static)
    if untrained_head(static):
        warnings.warn(
            f"The head of {model.name!r} is untrained (its kernel is all zeros): every "
            "image gets the same scores. Parity is still checked on the pre-logits "
            "features; load trained weights before serving this export.",
            KerasVitWarning,
            stacklevel=2,
        )
    staging = layout.staging_folder(model_dir, version)
    final = os.path.join(model_dir, str(version))
    options = dict(
        labels=labels,
        top_k=top_k,
        model_name=model_name,
        samples=samples,
        representative_images=representative_images,
        opset=opset,
        max_image_pixels=max_image_pixels,
    )
    try:
        artifacts = {}
        progress = tqdm(plan, desc="export", unit="artifact", disable=not verbose)
        for name, fmt, quantization, filename in progress:
            progress.set_postfix_str(name)
            path = os.path.normpath(os.path.join(staging, filename))
            _write(fmt, quantization, served, static, path, **options)
            release_memory()  # the converter's graphs, before the next one
            artifacts[name] = path
        uses_openvino = any(fmt == "openvino" for _, fmt, _, _ in plan)
        info = layout.ExportInfo(
            image_size=tuple(static.image_size),
            channels=static.channels,
            dynamic_resolution=served.dynamic_resolution,
            posemb_interpolation=static.posemb_interpolation,
            num_classes=static.num_classes,
            labels=None if labels is None else [str(label) for label in labels],
            openvino_precision=openvino_precision if uses_openvino else None,
            max_image_pixels=int(max_image_pixels),
        )
        info.write(staging)  # read by load_artifact during the parity check
        ran = runs_as(openvino_precision) if uses_openvino else "f32"
        criteria = {name: criteria_name(name, ran) for name in artifacts}
        rows = check_parity(
            static, artifacts, samples, load_artifact, verbose, criteria, release_memory
        )
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


def _write(fmt, quantization, served, static, path, **options):
    """Writes one artifact of format ``fmt`` to ``path``."""
    calibration = options["representative_images"]
    if fmt == "saved_model":
        from keras_vit.export.saved_model import write_saved_model

        write_saved_model(
            served,
            path,
            options["labels"],
            options["top_k"],
            static.image_size,
            options["model_name"],
            options["samples"][:2],
            options["max_image_pixels"],
        )
    elif fmt == "tflite":
        from keras_vit.export.tflite import convert_tflite

        convert_tflite(served, path, quantization, calibration)
    elif fmt == "onnx":
        from keras_vit.export.onnx import convert_onnx

        convert_onnx(served, path, options["opset"])
    else:
        from keras_vit.export.openvino import convert_openvino

        convert_openvino(served, path, quantization, calibration)
