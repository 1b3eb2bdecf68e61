"""Keras implementations under test: keras-vit, keras-hub and vit-keras.

Each builder takes ``(task, precision, workdir)`` and returns a zero-argument
``step`` that runs one batch to completion (``predict_on_batch`` or
``train_on_batch`` return NumPy, so the work is done when they return).
All three are driven the same way: Adam, sparse cross-entropy on logits,
random images in [-1, 1] and random labels. Every model's weights are random
and checkpoint-like (``benchmarks.checkpoint_like``: no bias left at 0, no
norm at scale 1).
"""

from __future__ import annotations

import numpy as np

from benchmarks import checkpoint_like
from benchmarks.specs import TASKS, model_spec

# Precision names of the benchmark -> Keras dtype policy.
KERAS_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}


def task_model(task, dtype=None):
    """The task's keras-vit model at its image size, under ``dtype`` (the global policy if None).

    Its weights are random and checkpoint-like (``benchmarks.checkpoint_like``).
    """
    from keras_vit.model.factories import build_variant

    variant = TASKS[task][0]
    model = build_variant(variant, image_size=model_spec(variant)["image_size"], dtype=dtype)
    return checkpoint_like.keras_model(model)


def inference_only(task, name):
    """Refuses a training task for an implementation that only runs inference."""
    if TASKS[task][2]:
        raise ValueError(f"{name} runs inference tasks only, got {task!r}.")


def random_batch(task, seed=0):
    """``(images (B, 224, 224, 3) float32 in [-1, 1], labels (B,) int32)`` of a task."""
    variant, batch, _ = TASKS[task]
    spec = model_spec(variant)
    rng = np.random.default_rng(seed)
    size = spec["image_size"]
    images = rng.uniform(-1.0, 1.0, (batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, spec["num_classes"], batch).astype("int32")
    return images, labels


def keras_step(model, task, jit_compile):
    """Compiles ``model`` for a task and returns its one-batch step."""
    import keras

    _, _, training = TASKS[task]
    images, labels = random_batch(task)
    if training:
        model.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
        return lambda: model.train_on_batch(images, labels)
    model.compile(jit_compile=jit_compile)
    return lambda: model.predict_on_batch(images)


def _set_policy(precision, policy=None):
    import keras

    if precision not in KERAS_POLICIES:
        raise ValueError(f"Keras implementations run {tuple(KERAS_POLICIES)}, got {precision!r}.")
    keras.config.set_dtype_policy(policy or KERAS_POLICIES[precision])


def build_keras_vit(task, precision, workdir, jit_compile=True, policy=None):
    """keras-vit; XLA-compiled by default (``jit_compile="auto"`` is off on CPU).

    ``jit_compile=False`` runs the TensorFlow graph, where oneDNN fuses the
    2-D GEMMs with their bias and GELU and runs bf16 on AVX512-BF16.
    ``policy`` overrides the precision's dtype policy: ``"bfloat16"`` keeps
    the weights (and the residual stream) in bf16, so that inference does not
    cast every float32 weight to bf16 at every step as ``mixed_bfloat16``
    does (a quarter of the op time of a batch-1 ViT-B/16 step).
    """
    _set_policy(precision, policy)
    return keras_step(task_model(task), task, jit_compile)


def build_keras_vit_frozen(
    task, precision, workdir, policy=None, jit_compile="auto", native_kernels="auto"
):
    """keras-vit through ``keras_vit.freeze``: the weights as graph constants (inference).

    The same model as ``build_keras_vit`` under the precision's policy (or
    ``policy``: ``"bfloat16"`` keeps the residual stream in bf16, as
    OpenVINO's bf16 does); the step calls the frozen function, whose weight
    arithmetic is folded away: with ``jit_compile=False`` TensorFlow's graph
    (oneDNN's pre-packed GEMM kernels where it runs them), with True one XLA
    program, with ``"auto"`` what ``freeze`` picks on this machine. The
    graph is tuned for the task's batch size (``freeze``'s ``batch_size``),
    as OpenVINO's CPU plugin picks its kernels for each input shape it runs.
    ``native_kernels`` is ``freeze``'s (keras-vit's CPU kernels in the
    float32 oneDNN graph).
    """
    import keras_vit

    inference_only(task, "keras-vit-frozen")
    _set_policy(precision, policy)
    images, _ = random_batch(task)
    frozen = keras_vit.freeze(
        task_model(task),
        jit_compile=jit_compile,
        batch_size=images.shape[0],
        native_kernels=native_kernels,
    )
    return lambda: frozen(images).numpy()


def build_keras_hub(task, precision, workdir, jit_compile="auto"):
    """keras-hub ``ViTImageClassifier`` over a ``ViTBackbone`` of the same size."""
    import keras_hub

    _set_policy(precision)
    spec = model_spec(TASKS[task][0])
    size, patch = spec["image_size"], spec["patch_size"]
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(size, size, 3),
        patch_size=(patch, patch),
        num_layers=spec["num_layers"],
        num_heads=spec["num_heads"],
        hidden_dim=spec["hidden_size"],
        mlp_dim=spec["mlp_dim"],
    )
    model = keras_hub.models.ViTImageClassifier(
        backbone=backbone, num_classes=spec["num_classes"], preprocessor=None
    )
    return keras_step(checkpoint_like.keras_model(model), task, jit_compile)


def build_vit_keras(task, precision, workdir, jit_compile="auto"):
    """vit-keras ``build_model`` (dropout 0 so that it matches the others)."""
    from vit_keras import vit

    _set_policy(precision)
    spec = model_spec(TASKS[task][0])
    model = vit.build_model(
        image_size=spec["image_size"],
        patch_size=spec["patch_size"],
        num_layers=spec["num_layers"],
        hidden_size=spec["hidden_size"],
        num_heads=spec["num_heads"],
        name="vit",
        mlp_dim=spec["mlp_dim"],
        classes=spec["num_classes"],
        dropout=0.0,
    )
    return keras_step(checkpoint_like.keras_model(model), task, jit_compile)
