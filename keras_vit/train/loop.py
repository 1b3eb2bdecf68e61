"""Runs a training recipe (see ``keras_vit.train.recipe``) with ``model.fit``.

``train(recipe)`` is the whole job of ``keras-vit train``: open the data,
build model, optimiser and metrics in the strategy's scope, fit with a
training state that survives a SIGKILL at any moment
(``keras_vit.train.resume``), evaluate, and write ``model.keras`` and
``metrics.json`` into the run directory. ``task: mpp`` recipes pre-train
with masked patch prediction (``keras_vit.MaskedPatchPrediction``) on the
images alone and also write the backbone: ``backbone.npz`` (official
layout: ``keras_vit.ViT_B16(weights=..., num_classes=10)`` fine-tunes it)
and ``backbone.keras``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from pathlib import Path

import keras
import tensorflow as tf

from keras_vit.atomic import atomic_path, write_json_atomic
from keras_vit.data import sources, streams
from keras_vit.messages import KerasVitWarning, logger
from keras_vit.model.mpp import MaskedPatchPrediction
from keras_vit.model.vit import ViT
from keras_vit.train import strategies
from keras_vit.train.recipe import Recipe
from keras_vit.train.resume import RunBackup
from keras_vit.train.schedules import WarmupDecay
from keras_vit.weights.writers import save_official_npz

OPTIMIZER_CLASSES = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
}


def build_optimizer(recipe, total_steps):
    """The recipe's optimiser with its warm-up + decay schedule.

    Args:
        recipe: ``Recipe``. Uses ``optimizer`` (adam | adamw | sgd), ``learning_rate``
            (peak), ``weight_decay``, ``beta_1``, ``beta_2``, ``momentum``,
            ``global_clipnorm``, ``gradient_accumulation_steps``,
            ``warmup_steps``, ``decay``, ``end_learning_rate``.
        total_steps: int. Optimiser updates of the whole run.

    Returns:
        ``keras.optimizers.Optimizer``.
    """
    name = recipe.optimizer
    warmup_steps = recipe.warmup_steps
    if warmup_steps >= total_steps:
        warmup_steps = total_steps // 10
        logger.info(
            "Run of %d steps is shorter than its warm-up: warm-up cut to %d.",
            total_steps,
            warmup_steps,
        )
    # With gradient accumulation the schedule sees every micro-batch.
    accumulation = recipe.gradient_accumulation_steps or 1
    schedule = WarmupDecay(
        peak=recipe.learning_rate,
        total_steps=total_steps * accumulation,
        warmup_steps=warmup_steps * accumulation,
        decay=recipe.decay,
        end=recipe.end_learning_rate,
    )
    common = {
        "learning_rate": schedule,
        "global_clipnorm": recipe.global_clipnorm,
        "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
    }
    optimizer_class = strategies.clip_after_all_reduce(OPTIMIZER_CLASSES[name])
    if name == "sgd":
        return optimizer_class(
            momentum=recipe.momentum, weight_decay=recipe.weight_decay or None, **common
        )
    adam_args = {"beta_1": recipe.beta_1, "beta_2": recipe.beta_2, **common}
    if name == "adamw":
        return optimizer_class(weight_decay=recipe.weight_decay, **adam_args)
    return optimizer_class(weight_decay=recipe.weight_decay or None, **adam_args)


def build_model(recipe, num_classes, include_top=True):
    """The recipe's ViT, from scratch or fine-tuned from ``weights``.

    ``model.variant`` (e.g. ``"B/16"``) goes through ``ViT.from_variant``;
    otherwise ``model`` holds ``ViT`` arguments. With ``weights`` (any
    checkpoint ``keras_vit.weights`` reads) and ``new_head``, the model
    follows the paper's fine-tuning: the pre-trained head and pre-logits
    layer are dropped and a zero-initialised head of ``num_classes`` is used.

    Args:
        recipe: ``Recipe``. Uses ``model``, ``image_size``, ``channels``,
            ``weights`` and ``new_head``.
        num_classes: int or None. Classes of the head.
        include_top: bool. False for a backbone without head (pre-training).

    Returns:
        A built ``keras_vit.ViT`` taking ``(batch, image_size, image_size,
        channels)`` in [-1, 1] and returning logits ``(batch, num_classes)``
        (pooled features without a top).
    """
    config = dict(recipe.model)
    variant = config.pop("variant", None)
    config.update(image_size=recipe.image_size, channels=recipe.channels, include_top=include_top)
    if not include_top:
        num_classes = None
    weights = recipe.weights
    if weights is None:
        if variant is not None:
            return ViT.from_variant(variant, num_classes=num_classes, **config)
        return ViT(num_classes=num_classes, **config)
    if recipe.new_head:
        config.setdefault("representation_size", None)
    if variant is not None:
        model = ViT.from_variant(variant, weights=weights, num_classes=num_classes, **config)
    else:
        with warnings.catch_warnings():
            if recipe.new_head:  # the checkpoint's head is replaced on purpose
                warnings.filterwarnings("ignore", message="Not loading the checkpoint's 'head'")
            model = ViT.from_checkpoint(weights, num_classes=num_classes, **config)
    if recipe.new_head and model.head is not None:
        for variable in model.head.weights:
            variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
    return model


def build_mpp_model(recipe):
    """``MaskedPatchPrediction`` around the recipe's ViT (without a head).

    Args:
        recipe: ``Recipe``. As ``build_model``, plus ``mpp`` (the task's
            settings) and ``seed`` (of the corruption draws).

    Returns:
        A built ``keras_vit.MaskedPatchPrediction``.
    """
    backbone = build_model(recipe, None, include_top=False)
    return MaskedPatchPrediction(backbone, seed=recipe.seed, **recipe.mpp)


LOSSES = {
    "softmax_xent": keras.losses.CategoricalCrossentropy,
    "sigmoid_xent": keras.losses.BinaryCrossentropy,
}


def compile_model(model, optimizer, recipe):
    """Compiles with the recipe's loss on one-hot labels (label smoothing) and accuracy.

    ``loss`` is ``"softmax_xent"`` (categorical cross-entropy) or
    ``"sigmoid_xent"`` (per-class binary cross-entropy, as big_vision
    pre-trains on ImageNet-21k). A ``MaskedPatchPrediction`` model brings its
    own loss and masked-patch accuracy.
    """
    task = {}
    if not isinstance(model, MaskedPatchPrediction):
        task = {
            "loss": LOSSES[recipe.loss](from_logits=True, label_smoothing=recipe.label_smoothing),
            "metrics": [keras.metrics.CategoricalAccuracy(name="accuracy")],
        }
    model.compile(
        optimizer=optimizer,
        jit_compile=bool(recipe.jit_compile),
        steps_per_execution=recipe.steps_per_execution,
        **task,
    )


def save_model_atomic(model, path):
    """Saves the model without its training state as ``.keras``, atomically.

    The file holds the architecture and weights of an uncompiled copy, so it
    loads in safe mode with nothing but ``keras_vit`` imported (the training
    state lives in the ``BackupAndRestore`` checkpoints).
    """
    inference_model = model.__class__.from_config(model.get_config())
    inference_model.set_weights(model.get_weights())
    with atomic_path(path, ".keras") as partial:
        inference_model.save(partial)
    return path


def save_backbone(backbone, output):
    """Writes a pre-trained backbone as ``backbone.keras`` and ``backbone.npz``.

    ``backbone.npz`` (official layout) is what ``weights=`` of every factory
    and of ``ViT.from_checkpoint`` reads: a new head is initialised (with
    the usual warning); the mask token and the prediction head are not in
    it. An ``.npz`` reads as ``semantics="official"`` (tanh GELU) unless its
    writer records other numerics, so the MPP recipes pre-train with
    official semantics. ``backbone.keras`` (safe mode) is the ViT as it is,
    for ``keras-vit fewshot`` and ``inspect``.

    Returns:
        dict ``{"backbone_keras": path, "backbone_npz": path or None}`` (None
        with a ``KerasVitWarning`` when the official layout cannot hold the
        backbone).
    """
    paths = {"backbone_keras": str(save_model_atomic(backbone, output / "backbone.keras"))}
    try:
        paths["backbone_npz"] = str(save_official_npz(backbone, str(output / "backbone.npz")))
    except ValueError as err:
        warnings.warn(
            f"backbone.npz not written ({err}); use backbone.keras.", KerasVitWarning, stacklevel=2
        )
        paths["backbone_npz"] = None
    return paths


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the model (atomically) whenever ``monitor`` improves on its best.

    Args:
        path: str or path. ``.keras`` file.
        monitor: str. A log key, e.g. ``"val_accuracy"``; larger is better
            unless the name contains ``"loss"``.
        best: float or None. The best so far (``best`` of a run being
            resumed: the monitored value times ``sign``).
    """

    def __init__(self, path, monitor="val_accuracy", best=None):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.sign = -1.0 if "loss" in monitor else 1.0
        self.best = -math.inf if best is None else float(best)

    @property
    def has_best(self):
        """True once a value was seen (``best`` is finite)."""
        return math.isfinite(self.best)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and self.sign * value > self.best:
            self.best = self.sign * value
            save_model_atomic(self.model, self.path)


def tensorboard_callbacks(log_dir):
    """``[TensorBoard(log_dir)]``, or ``[]`` with a notice when tensorboard is not installed."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        logger.info("TensorBoard logs skipped: the tensorboard package is not installed.")
        return []
    return [keras.callbacks.TensorBoard(str(log_dir))]


def open_data(recipe):
    """Training and evaluation ``Source``s of a recipe.

    The evaluation source is ``eval_data`` or, with ``dev_percent``, the
    held-out part of ``data``.

    Returns:
        ``(train Source, eval Source)``.

    Raises:
        ValueError: if neither ``eval_data`` nor ``dev_percent`` is set, or
            a classifier's data has no labels.
    """

    def source(spec, split):
        return sources.open_source(
            spec, split, recipe.data_dir, recipe.download, recipe.channels, recipe.num_classes
        )

    train_source = source(recipe.data, "train")
    if recipe.task == "classify" and not train_source.labelled and not recipe.num_classes:
        raise ValueError(
            f"{recipe.data} holds images without classes (no class subfolders): train a "
            "classifier on class subfolders, or pre-train on it with task=mpp."
        )
    if recipe.dev_percent:
        train_source, dev_source = sources.split_dev(train_source, recipe.dev_percent)
        return train_source, dev_source
    if recipe.eval_data is None:
        raise ValueError("Set `eval_data` (a data source) or `dev_percent` (held out from `data`).")
    return train_source, source(recipe.eval_data, "test")


def _largest_divisor(number, limit):
    return max(d for d in range(1, min(number, limit) + 1) if number % d == 0)


def schedule_of(recipe, num_examples):
    """``(epochs, steps_per_epoch)`` that run exactly ``steps``, or ``epochs`` of the data.

    With ``steps``, an epoch is ``steps_per_epoch`` steps (fewer when
    ``steps`` is smaller), or without it the largest divisor of ``steps``
    that is at most one pass over the data; a notice says when the epoch
    differs from what was asked. ``Recipe`` refuses ``steps`` that are not
    a multiple of an explicit ``steps_per_epoch``.

    Raises:
        ValueError: if neither is set, or the data is smaller than one batch.
    """
    batches = num_examples // recipe.batch_size
    if batches < 1:
        raise ValueError(
            f"batch_size {recipe.batch_size} is larger than the {num_examples} training examples."
        )
    steps = recipe.steps
    if steps:
        if recipe.steps_per_epoch:
            steps_per_epoch = min(recipe.steps_per_epoch, steps)
            asked = recipe.steps_per_epoch
        else:
            steps_per_epoch = _largest_divisor(steps, batches)
            asked = min(batches, steps)
        if steps_per_epoch != asked:
            logger.info(
                "%d steps run as %d epoch(s) of %d steps (steps_per_epoch %d would not end "
                "on step %d).",
                steps,
                steps // steps_per_epoch,
                steps_per_epoch,
                asked,
                steps,
            )
        return steps // steps_per_epoch, steps_per_epoch
    if recipe.epochs is None:
        raise ValueError("The recipe sets neither `epochs` nor `steps`.")
    return int(recipe.epochs), batches


def dtype_policy_of(mixed_precision):
    """Keras dtype policy name: False -> float32, True -> mixed_bfloat16, or the name."""
    if mixed_precision is True:
        return "mixed_bfloat16"
    return mixed_precision or "float32"


def check_strategy_support(recipe, strategy):
    """Rejects settings Keras cannot run under ``strategy``.

    Raises:
        ValueError: for gradient accumulation over several replicas (Keras
            3 accumulates inside a ``cond``, where ``tf.distribute`` cannot
            all-reduce: "merge_call called while defining a new graph").
    """
    if recipe.gradient_accumulation_steps and strategy.num_replicas_in_sync > 1:
        raise ValueError(
            "gradient_accumulation_steps needs a single replica in Keras 3 (it "
            f"accumulates inside a cond that cannot all-reduce); got "
            f"{strategy.num_replicas_in_sync} replicas. Spread the batch over the "
            "replicas instead (batch_size is global), or use strategy=cpu / one device."
        )


def supports_xla(strategy):
    """False for several replicas on CPUs: XLA on CPU has no collectives
    ("Collectives are not yet implemented for CPU devices when compiling with
    XLA") and cannot reach another logical CPU's variables."""
    if strategy.num_replicas_in_sync < 2:
        return True
    return not all("CPU" in device.upper() for device in strategy.extended.worker_devices)


def run_directory(recipe, strategy):
    """The chief writes into ``output``; other workers into ``output/workers/worker-N``."""
    output = Path(recipe.output or f"runs/{recipe.name}")
    if not strategies.is_chief(strategy):
        output = output / "workers" / f"worker-{strategies.task_id(strategy)}"
    output.mkdir(parents=True, exist_ok=True)
    return output


def fresh_command(recipe, output):
    """The command that starts a run over, for messages about a backup."""
    return f"keras-vit train {recipe.name or 'RECIPE'} --output {output} --fresh [your --set ...]"


def train(recipe, fresh=False):
    """Runs a recipe end to end, resuming an interrupted run in the same ``output``.

    Args:
        recipe: ``Recipe`` from ``keras_vit.train.recipe.load_recipe``; ``output`` is the
            run directory (default ``runs/<name>``).
        fresh: bool. Delete the run's backup and start over instead of resuming.

    Returns:
        dict of metrics, also written to ``<output>/metrics.json``:
        ``test_accuracy`` and ``test_loss`` (on the evaluation data; for
        ``task: mpp`` the masked-patch accuracy, None for the ``pixels``
        target, and loss), ``train_seconds``, ``epochs``, ``steps``
        (optimiser updates), ``num_parameters``, ``num_replicas``,
        ``history`` (of the epochs this call trained), ``files`` (what was
        written) and the recipe.

    Raises:
        ResumeError: (a ``ValueError``) when the run's backup is damaged or
            was written for another plan; its message names the file and the
            command that starts fresh.
    """
    strategy = strategies.make_strategy(recipe.strategy, recipe.tpu, recipe.cpu_devices)
    check_strategy_support(recipe, strategy)
    if recipe.jit_compile and not supports_xla(strategy):
        logger.info("jit_compile turned off: XLA has no cross-replica collectives on CPU.")
        recipe = recipe.replace(jit_compile=False)
    output = run_directory(recipe, strategy)
    keras.utils.set_random_seed(recipe.seed)
    if recipe.deterministic:
        tf.config.experimental.enable_op_determinism()
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype_policy_of(recipe.mixed_precision))
    try:
        with sources.named_decode_errors():  # a damaged image: one sentence naming its file
            return _fit_and_evaluate(recipe, strategy, output, fresh)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _images_only(images, labels):
    return images


def _fit_and_evaluate(recipe, strategy, output, fresh):
    train_source, eval_source = open_data(recipe)
    epochs, steps_per_epoch = schedule_of(recipe, train_source.num_examples)
    pretraining = recipe.task == "mpp"
    train_data = streams.train_stream(
        train_source,
        recipe.image_size,
        recipe.batch_size,
        augment=recipe.augment,
        seed=recipe.seed,
        cache=recipe.cache,
        shuffle_buffer=recipe.shuffle_buffer,
        deterministic=recipe.deterministic,
        repeat=bool(recipe.steps),
    )
    eval_data = streams.eval_stream(
        eval_source,
        recipe.image_size,
        recipe.eval_batch_size or recipe.batch_size,
        cache=True,
    )
    if pretraining:  # the labels (all 0 for a folder of images) are not used
        train_data, eval_data = train_data.map(_images_only), eval_data.map(_images_only)
    plan = {
        "task": recipe.task,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": recipe.batch_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
    }
    backup = RunBackup(output / "backup", plan, fresh_command(recipe, output))
    if fresh:
        backup.remove()
    with strategy.scope():
        if pretraining:
            model = build_mpp_model(recipe)
        else:
            model = build_model(recipe, recipe.num_classes or train_source.num_classes)
        compile_model(model, build_optimizer(recipe, epochs * steps_per_epoch), recipe)
        initial_epoch, best = backup.restore(model)
    best_checkpoint = None
    if strategies.is_chief(strategy):
        monitor = "val_loss" if pretraining else "val_accuracy"
        best_checkpoint = BestModelCheckpoint(output / "best.keras", monitor, best)
    callbacks = [c for c in (best_checkpoint, backup.callback(best_checkpoint)) if c is not None]
    if strategies.is_chief(strategy) and recipe.tensorboard:
        callbacks += tensorboard_callbacks(output / "logs")

    fit_support = (
        strategies.multiworker_fit_support()
        if strategies.is_multiworker(strategy)
        else contextlib.nullcontext()
    )
    with fit_support:
        start = time.perf_counter()
        history = model.fit(
            train_data,
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_data=eval_data,
            callbacks=callbacks,
            shuffle=False,  # the pipeline shuffles
            verbose=recipe.verbose,
        )
        train_seconds = time.perf_counter() - start
        results = model.evaluate(eval_data, verbose=0, return_dict=True)

    files = {"model": str(save_model_atomic(model, output / "model.keras"))}
    if pretraining:
        files.update(save_backbone(model.backbone, output))
    metrics = {
        "test_accuracy": None if "accuracy" not in results else float(results["accuracy"]),
        "test_loss": float(results["loss"]),
        "train_seconds": round(train_seconds, 2),
        "epochs": epochs,
        "steps": int(model.optimizer.iterations.numpy()),
        "num_parameters": int(model.count_params()),
        "num_replicas": strategy.num_replicas_in_sync,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "files": files,
        "recipe": recipe.to_dict(),
    }
    write_json_atomic(metrics, output / "metrics.json")
    backup.remove()  # only now: a kill before this resumes from the last epoch
    return metrics


def evaluate_saved_model(path, data, split="test", data_dir=None, batch_size=64):
    """Accuracy and loss of a saved ``.keras`` model on a data source.

    The input size and channels come from the model; images are resized
    to it and scaled to [-1, 1].

    Args:
        path: str or path. A ``.keras`` file (loaded in safe mode).
        data: str. A data source spec (see ``keras_vit.data.open_source``).
        split: str. Split when ``data`` names none.
        data_dir: str or None. tfds data directory.
        batch_size: int.

    Returns:
        dict with ``accuracy``, ``loss`` and ``num_examples``.

    Raises:
        FileNotFoundError: if the model file does not exist.
        ValueError: if the data has more classes than the model's head.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Model file not found: {path}")
    model = keras.saving.load_model(path, safe_mode=True)
    if not isinstance(model, ViT) or model.head is None:
        raise ValueError(
            f"{path} holds a {type(model).__name__} without a classification head; evaluate "
            "a classifier (fine-tune a pre-trained backbone.npz with weights=... first)."
        )
    source = sources.open_source(
        data, split, data_dir, channels=model.channels, num_classes=model.num_classes
    )
    if source.num_classes > model.num_classes:
        raise ValueError(
            f"{data} has {source.num_classes} classes; the model's head has {model.num_classes}."
        )
    source.num_classes = model.num_classes
    compile_model(model, "sgd", Recipe())
    dataset = streams.eval_stream(source, model.image_size, batch_size)
    loss, accuracy = model.evaluate(dataset, verbose="auto")
    return {"accuracy": float(accuracy), "loss": float(loss), "num_examples": source.num_examples}
