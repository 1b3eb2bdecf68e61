"""Exported and non-Keras implementations: SavedModel, TFLite, ONNX, torch.

Builders have the signature of ``benchmarks.keras_impls`` builders. Exported
files are written once into ``workdir`` (by the first process that needs
them) and reused by later processes; export time is never timed. The
keras-vit artifacts come from the package's own exporters
(``keras_vit.export.saved_model``, ``keras_vit.export.tflite``, ``keras_vit.export.onnx``), so
the numbers are those of what users deploy. Their graphs take pixels in
[0, 255] and include the preprocessing and the softmax (a negligible cost).
"""

from __future__ import annotations

import os

import numpy as np

from benchmarks import checkpoint_like
from benchmarks.keras_impls import inference_only, random_batch, task_model
from benchmarks.specs import TASKS, model_spec

THREADS = os.cpu_count()
# Benchmark precision -> keras_vit.export.tflite quantization.
TFLITE_QUANTIZATIONS = {"fp32": "float32", "int8": "dynamic"}


def _pixels(task):
    """Random images of a task in [0, 255] (exported graphs preprocess inside)."""
    images, _ = random_batch(task)
    return (images + 1.0) * 127.5


def _cached(workdir, filename, write):
    """``workdir/filename``, calling ``write(tmp_path)`` and renaming it first if missing."""
    path = os.path.join(workdir, filename)
    if not os.path.exists(path):
        os.makedirs(workdir, exist_ok=True)
        partial = f"{path}.partial-{os.getpid()}"
        write(partial)
        os.replace(partial, path)
    return path


def build_saved_model(task, precision, workdir, jit_compile=False):
    """SavedModel ``serving_default`` as ``keras_vit.export.saved_model`` exports it.

    With ``jit_compile=True`` the same serving function is saved inside an
    XLA-compiled ``tf.function`` (the attribute is kept in the SavedModel).
    """
    import tensorflow as tf

    from keras_vit.export.saved_model import ServingFunctions, write_saved_model

    inference_only(task, "SavedModel")
    variant = TASKS[task][0].replace("/", "")

    def write(path):
        model = task_model(task, "float32")
        if not jit_compile:
            write_saved_model(model, path)
            return
        functions = ServingFunctions(model)
        module = tf.Module()
        module.model = model
        module.serve = tf.function(
            lambda images: functions.serving_default(images),
            input_signature=[model.images_spec()],
            jit_compile=True,
        )
        tf.saved_model.save(module, path, signatures={"serving_default": module.serve})

    suffix = "_xla" if jit_compile else ""
    path = _cached(workdir, f"saved_model_{variant}{suffix}", write)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    images = tf.constant(_pixels(task))
    return lambda: serve(images=images)["logits"].numpy()


def build_tflite(task, precision, workdir):
    """LiteRT interpreter on ``keras_vit.export.tflite`` output (int8 = dynamic range)."""
    from ai_edge_litert.interpreter import Interpreter

    from keras_vit.export.tflite import convert_tflite

    inference_only(task, "TFLite")
    quantization = TFLITE_QUANTIZATIONS[precision]
    variant = TASKS[task][0].replace("/", "")
    path = _cached(
        workdir,
        f"vit_{variant}_{quantization}.tflite",
        lambda p: convert_tflite(task_model(task, "float32"), p, quantization),
    )
    runner = Interpreter(model_path=path, num_threads=THREADS).get_signature_runner(
        "serving_default"
    )
    images = _pixels(task)
    return lambda: runner(images=images)["logits"]


def _onnx_session(path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def build_keras_vit_onnx(task, precision, workdir):
    """onnxruntime on keras-vit's tf2onnx export (``keras_vit.export.onnx``)."""
    from keras_vit.export.onnx import convert_onnx

    inference_only(task, "ONNX")
    variant = TASKS[task][0].replace("/", "")
    path = _cached(
        workdir, f"vit_{variant}_keras.onnx", lambda p: convert_onnx(task_model(task, "float32"), p)
    )
    session = _onnx_session(path)
    feed = {session.get_inputs()[0].name: _pixels(task)}
    return lambda: session.run(None, feed)


def _hf_model(task):
    """Hugging Face ``ViTForImageClassification`` of the task's size (checkpoint-like weights)."""
    import torch
    import transformers

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    spec = model_spec(TASKS[task][0])
    config = transformers.ViTConfig(
        hidden_size=spec["hidden_size"],
        num_hidden_layers=spec["num_layers"],
        num_attention_heads=spec["num_heads"],
        intermediate_size=spec["mlp_dim"],
        image_size=spec["image_size"],
        patch_size=spec["patch_size"],
        num_labels=spec["num_classes"],
        layer_norm_eps=1e-6,
    )
    return checkpoint_like.torch_module(transformers.ViTForImageClassification(config))


def _nchw(task):
    images, labels = random_batch(task)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)), labels


def build_hf_onnx(task, precision, workdir):
    """onnxruntime on transformers' ViT exported with ``torch.onnx`` (TorchScript exporter)."""
    import torch

    inference_only(task, "ONNX")
    variant = TASKS[task][0].replace("/", "")

    def write(path):
        model = _hf_model(task).eval()
        example = torch.from_numpy(_nchw("infer_b1")[0])
        torch.onnx.export(
            model,
            (example,),
            path,
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )

    path = _cached(workdir, f"vit_{variant}_hf.onnx", write)
    session = _onnx_session(path)
    feed = {"pixel_values": _nchw(task)[0]}
    return lambda: session.run(None, feed)


def torch_step(model, task, logits_of):
    """One-batch step of an eager PyTorch classifier.

    Args:
        model: ``torch.nn.Module``.
        task: a key of ``TASKS``.
        logits_of: ``(model, images NCHW) -> logits``.

    Returns:
        inference under ``inference_mode``, or an Adam + cross-entropy step.
    """
    import torch

    images, labels = _nchw(task)
    images, labels = torch.from_numpy(images), torch.from_numpy(labels).long()
    if not TASKS[task][2]:
        model.eval()

        def infer():
            with torch.inference_mode():
                return logits_of(model, images).numpy()

        return infer
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(logits_of(model, images), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    return train


def build_hf_torch(task, precision, workdir):
    """transformers' ViT in eager PyTorch (``inference_mode``; Adam for training)."""
    return torch_step(_hf_model(task), task, lambda model, x: model(pixel_values=x).logits)


def build_timm(task, precision, workdir):
    """timm's ``vit_*_patch16_224`` in eager PyTorch (checkpoint-like random weights)."""
    import timm
    import torch

    torch.set_num_threads(THREADS)
    name = {"B/16": "vit_base_patch16_224", "S/16": "vit_small_patch16_224"}[TASKS[task][0]]
    model = checkpoint_like.torch_module(timm.create_model(name, pretrained=False))
    return torch_step(model, task, lambda model, x: model(x))
