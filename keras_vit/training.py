"""Runs a training recipe (see ``keras_vit.recipes``) with ``model.fit``.

``train(recipe)`` is the whole job of ``keras-vit train``: open the data,
build model, optimiser and metrics in the strategy's scope, fit with
checkpoints that survive a SIGKILL (``BackupAndRestore``), evaluate, and
write ``model.keras`` and ``metrics.json`` into the run directory.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import keras

from keras_vit import data as vit_data
from keras_vit.models import ViT, build_variant
from keras_vit.schedules import WarmupDecay

OPTIMIZERS = ("adam", "adamw", "sgd")


def build_optimizer(recipe, total_steps):
    """The recipe's optimiser with its warm-up + decay schedule.

    Args:
        recipe: dict. Uses ``optimizer`` (adam | adamw | sgd), ``learning_rate``
            (peak), ``weight_decay``, ``beta_1``, ``beta_2``, ``momentum``,
            ``global_clipnorm``, ``gradient_accumulation_steps``,
            ``warmup_steps``, ``decay``, ``end_learning_rate``.
        total_steps: int. Optimiser updates of the whole run.

    Returns:
        ``keras.optimizers.Optimizer``.

    Raises:
        ValueError: for an unknown optimiser name.
    """
    name = recipe["optimizer"]
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}.")
    warmup_steps = recipe["warmup_steps"]
    if warmup_steps >= total_steps:
        warmup_steps = total_steps // 10
        print(f"Run of {total_steps} steps is shorter than its warm-up: warm-up cut to {warmup_steps}.")
    # With gradient accumulation the schedule sees every micro-batch.
    accumulation = recipe["gradient_accumulation_steps"] or 1
    schedule = WarmupDecay(
        peak=recipe["learning_rate"],
        total_steps=total_steps * accumulation,
        warmup_steps=warmup_steps * accumulation,
        decay=recipe["decay"],
        end=recipe["end_learning_rate"],
    )
    common = {
        "learning_rate": schedule,
        "global_clipnorm": recipe["global_clipnorm"],
        "gradient_accumulation_steps": recipe["gradient_accumulation_steps"],
    }
    if name == "sgd":
        return keras.optimizers.SGD(
            momentum=recipe["momentum"], weight_decay=recipe["weight_decay"] or None, **common
        )
    adam_args = {"beta_1": recipe["beta_1"], "beta_2": recipe["beta_2"], **common}
    if name == "adamw":
        return keras.optimizers.AdamW(weight_decay=recipe["weight_decay"], **adam_args)
    return keras.optimizers.Adam(weight_decay=recipe["weight_decay"] or None, **adam_args)


def build_model(recipe, num_classes):
    """The recipe's ViT: ``model.variant`` via ``build_variant`` or ``ViT(**model)``.

    Args:
        recipe: dict. Uses ``model``, ``image_size`` and ``channels``.
        num_classes: int. Classes of the head.

    Returns:
        A built ``keras_vit.ViT`` taking ``(batch, image_size, image_size,
        channels)`` and returning logits ``(batch, num_classes)``.
    """
    config = dict(recipe["model"])
    variant = config.pop("variant", None)
    config.update(image_size=recipe["image_size"], channels=recipe["channels"])
    if variant is not None:
        return build_variant(variant, num_classes=num_classes, **config)
    return ViT(num_classes=num_classes, **config)


def compile_model(model, optimizer, recipe):
    """Compiles with one-hot cross-entropy (label smoothing) and accuracy."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=recipe["label_smoothing"]
        ),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=bool(recipe["jit_compile"]),
    )


def save_model_atomic(model, path):
    """Saves a ``.keras`` file through a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(obj, path):
    """Writes JSON through a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=str)
    os.replace(tmp, path)


def train(recipe):
    """Runs a recipe end to end.

    Args:
        recipe: dict from ``keras_vit.recipes.load_recipe``; ``output`` is the
            run directory.

    Returns:
        dict of metrics, also written to ``<output>/metrics.json``:
        ``test_accuracy``, ``test_loss``, ``train_seconds``, ``epochs``,
        ``steps``, ``num_parameters``, ``history`` and the recipe.
    """
    output = Path(recipe["output"] or f"runs/{recipe['name']}")
    output.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(recipe["seed"])

    train_source = vit_data.open_source(
        recipe["data"], "train", recipe["data_dir"], recipe["download"], recipe["channels"]
    )
    eval_source = vit_data.open_source(
        recipe["eval_data"], "test", recipe["data_dir"], recipe["download"], recipe["channels"]
    )
    num_classes = recipe["num_classes"] or train_source.num_classes
    batch_size = recipe["batch_size"]
    steps_per_epoch = train_source.num_examples // batch_size
    if recipe["epochs"] is None:
        raise ValueError("The recipe sets neither `epochs` nor `steps`.")
    epochs = int(recipe["epochs"])
    total_steps = epochs * steps_per_epoch

    train_data = vit_data.train_pipeline(
        train_source,
        recipe["image_size"],
        batch_size,
        augment=recipe["augment"],
        seed=recipe["seed"],
        cache=recipe["cache"],
        shuffle_buffer=recipe["shuffle_buffer"],
        deterministic=recipe["deterministic"],
    )
    eval_data = vit_data.eval_pipeline(
        eval_source, recipe["image_size"], recipe["eval_batch_size"] or batch_size, cache=True
    )

    model = build_model(recipe, num_classes)
    compile_model(model, build_optimizer(recipe, total_steps), recipe)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(output / "backup")),
    ]
    if recipe["tensorboard"]:
        callbacks.append(keras.callbacks.TensorBoard(str(output / "logs")))

    start = time.perf_counter()
    history = model.fit(
        train_data,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=eval_data,
        callbacks=callbacks,
        verbose=recipe["verbose"],
    )
    train_seconds = time.perf_counter() - start
    test_loss, test_accuracy = model.evaluate(eval_data, verbose=0)

    save_model_atomic(model, output / "model.keras")
    metrics = {
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "train_seconds": round(train_seconds, 2),
        "epochs": epochs,
        "steps": int(model.optimizer.iterations.numpy()),
        "num_parameters": int(model.count_params()),
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "recipe": recipe,
    }
    write_json_atomic(metrics, output / "metrics.json")
    return metrics

