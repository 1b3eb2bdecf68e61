"""OpenVINO implementations: the peer's conversions and keras-vit's own export.

- ``openvino``: OpenVINO converting the Hugging Face ViT's ONNX export (the
  ``hf-onnx`` file), what an OpenVINO user serving a ViT does;
- ``openvino-savedmodel``: OpenVINO converting keras-vit's TF Serving
  SavedModel with a fixed rank (``input=[-1, H, W, C]``), the issue's
  measurement; the faster of the two is the peer (``benchmarks/targets.py``);
- ``keras-vit-openvino``: ``keras_vit.export.openvino.convert_openvino``, what
  ``keras-vit export --format openvino`` writes.

Precisions: ``fp32`` (``INFERENCE_PRECISION_HINT`` f32; the CPU plugin's
default on AVX512-BF16 CPUs is bf16), ``bf16`` (hint bf16) and ``int8`` (NNCF
post-training quantization with the transformer scheme, calibrated on real
photos: crops of scikit-image's sample photos; run with ``INT8_HINT``).
IRs are written once per variant into ``workdir`` by the prepare process
(calibration and conversion are never timed); the timed process only
compiles and runs them, so its peak memory has no TensorFlow in it.
"""

from __future__ import annotations

import os

import numpy as np

from benchmarks.keras_impls import inference_only, task_model
from benchmarks.portable_impls import (
    _nchw,
    _pixels,
    build_hf_onnx,
    build_saved_model,
)
from benchmarks.specs import TASKS, model_spec

#: Benchmark precision -> the CPU plugin's INFERENCE_PRECISION_HINT.
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "bf16"}
#: Float ops of an int8 IR (LayerNorm, softmax, GELU) run in bf16 like the
#: plugin's default on this CPU; ``benchmarks/accuracy.py`` measures the same.
INT8_HINT = HINTS["int8"]
CALIBRATION_CROPS_PER_PHOTO = 4  # x 13 photos
#: The CPU plugin's inference precision -> the benchmark's precision name.
BENCHMARK_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
#: Compile with the CPU plugin's per-layer performance counters
#: (``benchmarks/op_profile.py`` sets it; the step then has ``.request``).
PERF_COUNT = False


def calibration_photos(size, seed=3):
    """Real images for int8 calibration: float32 ``(52, size, size, 3)`` in [0, 255]."""
    from benchmarks.accuracy import photo_crops

    return photo_crops(CALIBRATION_CROPS_PER_PHOTO, size=size, seed=seed)[0]


def cached_ir(workdir, stem, convert):
    """``workdir/stem.xml``, calling ``convert() -> openvino.Model`` and saving it first if missing.

    Saved under temporary names and renamed, the ``.bin`` file first.
    """
    import openvino as ov

    final = os.path.join(workdir, stem)
    if not os.path.exists(f"{final}.xml"):
        os.makedirs(workdir, exist_ok=True)
        partial = f"{final}.partial-{os.getpid()}"
        ov.save_model(convert(), f"{partial}.xml", compress_to_fp16=False)
        os.replace(f"{partial}.bin", f"{final}.bin")
        os.replace(f"{partial}.xml", f"{final}.xml")
    return f"{final}.xml"


def compiled_step(path, precision, inputs):
    """One-batch step of an IR compiled for the CPU with the precision's hint."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": HINTS[precision]}
    if PERF_COUNT:
        config["PERF_COUNT"] = True
    compiled = ov.Core().compile_model(path, "CPU", config)
    request = compiled.create_infer_request()

    def step():
        return request.infer(inputs)

    step.request = request
    return marked_with_precision(step, compiled, precision)


def marked_with_precision(step, compiled, precision):
    """``step``, with ``computes_in`` set where the plugin does not compute in ``precision``.

    The precision hint is a request: a CPU without bf16 instructions runs a
    bf16-hinted model in f32, and the row must say so (``worker.run_job``).
    An int8 row's GEMMs are int8 whatever its float ops run in.
    """
    from keras_vit.export.openvino import compiled_precision

    ran = compiled_precision(compiled)
    ran = BENCHMARK_PRECISIONS.get(ran, ran)
    if precision != "int8" and ran != precision:
        step.computes_in = ran
    return step


def _quantized(ir, images):
    import nncf

    dataset = nncf.Dataset(list(images), lambda image: image[None])
    return nncf.quantize(
        ir, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(images)
    )


def build_openvino(task, precision, workdir):
    """OpenVINO on the Hugging Face ViT's ONNX export (``hf-onnx``'s file)."""
    inference_only(task, "OpenVINO")
    variant = TASKS[task][0].replace("/", "")

    def convert():
        import openvino as ov

        build_hf_onnx(task, "fp32", workdir)  # writes the ONNX file once
        ir = ov.convert_model(os.path.join(workdir, f"vit_{variant}_hf.onnx"))
        if precision != "int8":
            return ir
        size = model_spec(TASKS[task][0])["image_size"]
        photos = calibration_photos(size) / 127.5 - 1.0  # HF ViT's normalisation
        return _quantized(ir, np.ascontiguousarray(photos.transpose(0, 3, 1, 2), "float32"))

    suffix = "_int8" if precision == "int8" else ""
    path = cached_ir(workdir, f"ov_hf_{variant}{suffix}", convert)
    return compiled_step(path, precision, _nchw(task)[0])


def build_openvino_savedmodel(task, precision, workdir):
    """OpenVINO converting keras-vit's TF Serving SavedModel (``serving_default``, rank fixed)."""
    inference_only(task, "OpenVINO")
    if precision == "int8":
        raise ValueError("openvino-savedmodel runs fp32 and bf16; int8 is measured on `openvino`.")
    variant = TASKS[task][0].replace("/", "")
    size = model_spec(TASKS[task][0])["image_size"]

    def convert():
        import openvino as ov

        build_saved_model(task, "fp32", workdir)  # writes the SavedModel once
        return ov.convert_model(
            os.path.join(workdir, f"saved_model_{variant}"), input=[-1, size, size, 3]
        )

    path = cached_ir(workdir, f"ov_savedmodel_{variant}", convert)
    return compiled_step(path, precision, _pixels(task))


def build_keras_vit_openvino(task, precision, workdir):
    """keras-vit's OpenVINO export (``keras_vit.export.openvino.convert_openvino``)."""
    inference_only(task, "OpenVINO")
    variant = TASKS[task][0].replace("/", "")
    quantization = "int8" if precision == "int8" else "float32"
    path = os.path.join(workdir, f"keras_vit_{variant}_{quantization}.xml")
    if not os.path.exists(path):
        from keras_vit.export.openvino import convert_openvino

        size = model_spec(TASKS[task][0])["image_size"]
        calibration = calibration_photos(size) if quantization == "int8" else None
        convert_openvino(task_model(task, "float32"), path, quantization, calibration)
    return compiled_step(path, precision, _pixels(task))
