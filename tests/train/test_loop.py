"""Recipes, schedule, optimisers, mixed precision, fine-tuning from a checkpoint, evaluate."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vit.train.loop import (
    build_model,
    build_optimizer,
    check_strategy_support,
    supports_xla,
    train,
)
from keras_vit.train.recipe import DEFAULTS, PIPELINES_DIR, Recipe, load_recipe
from keras_vit.train.schedules import WarmupDecay
from keras_vit_cli import main as cli

from conftest import fixture_case

#: Overrides that shrink digits_scratch to a model that trains in seconds.
TINY_MODEL = [
    "model.hidden_size=16",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.mlp_dim=32",
    "batch_size=64",
    "jit_compile=false",
]
TINY_DIGITS = [*TINY_MODEL, "epochs=1", "verbose=0"]


def test_warmup_then_cosine_and_linear_decay():
    cosine = WarmupDecay(1.0, total_steps=110, warmup_steps=10, decay="cosine", end=0.1)
    linear = WarmupDecay(1.0, total_steps=110, warmup_steps=10, decay="linear")
    values = lambda s, steps: [float(s(t)) for t in steps]  # noqa: E731
    np.testing.assert_allclose(values(cosine, [0, 5, 10]), [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(values(cosine, [60, 110, 500]), [0.55, 0.1, 0.1], atol=1e-6)
    np.testing.assert_allclose(values(linear, [35, 60, 110]), [0.75, 0.5, 0.0], atol=1e-6)
    restored = WarmupDecay.from_config(cosine.get_config())
    assert float(restored(33)) == pytest.approx(float(cosine(33)))
    with pytest.raises(ValueError, match="warmup_steps < total_steps"):
        WarmupDecay(1.0, total_steps=10, warmup_steps=10)


def test_optimizers_follow_the_recipes():
    finetune = load_recipe("cifar10_finetune", ["gradient_accumulation_steps=4"])
    sgd = build_optimizer(finetune, total_steps=10_000)
    assert isinstance(sgd, keras.optimizers.SGD)
    assert (sgd.momentum, sgd.weight_decay, sgd.global_clipnorm) == (0.9, None, 1.0)
    assert sgd.gradient_accumulation_steps == 4
    # The schedule counts micro-batches: the peak comes after 4 x 500 of them.
    assert float(sgd.learning_rate) == 0.0
    assert sgd._learning_rate.warmup_steps == 2000 and sgd._learning_rate.total_steps == 40_000

    pretrain = load_recipe("imagenet21k_pretrain")
    adamw = build_optimizer(pretrain, total_steps=100_000)
    assert isinstance(adamw, keras.optimizers.AdamW)
    assert (adamw.beta_1, adamw.beta_2, adamw.weight_decay) == (0.9, 0.999, 0.03)
    assert adamw._learning_rate.decay == "linear" and adamw._learning_rate.warmup_steps == 10_000
    assert pretrain.loss == "sigmoid_xent"
    with pytest.raises(ValueError, match="optimizer must be one of"):
        load_recipe("digits_scratch", ["optimizer=lamb"])


def test_gradient_accumulation_over_replicas_is_refused():
    class TwoReplicas:
        num_replicas_in_sync = 2

    recipe = load_recipe("cifar10_finetune", ["gradient_accumulation_steps=8"])
    with pytest.raises(ValueError, match="single replica"):
        check_strategy_support(recipe, TwoReplicas())
    check_strategy_support(recipe, tf.distribute.get_strategy())  # one replica: fine


def test_xla_is_only_used_where_it_has_collectives():
    def strategy(replicas, devices):
        extended = type("Extended", (), {"worker_devices": devices})
        return type("Stub", (), {"num_replicas_in_sync": replicas, "extended": extended})()

    assert supports_xla(tf.distribute.get_strategy())
    assert not supports_xla(strategy(2, ["/job:localhost/device:CPU:0", "/device:CPU:1"]))
    assert not supports_xla(strategy(2, ["/job:worker/task:0/device:CPU:0"]))  # 2 workers
    assert supports_xla(strategy(2, ["/device:GPU:0", "/device:GPU:1"]))


@pytest.mark.parametrize("path", sorted(PIPELINES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_loads(path):
    recipe = load_recipe(str(path))
    assert isinstance(recipe, Recipe) and set(recipe.to_dict()) == set(DEFAULTS)
    assert recipe.epochs or recipe.steps
    assert recipe.eval_data or recipe.dev_percent


def test_overrides_parse_yaml_and_reject_unknown_keys():
    recipe = load_recipe(
        "digits_scratch",
        ["epochs=3", "mixed_precision=true", "model.hidden_size=32", "variant=S/16"],
    )
    assert recipe.epochs == 3 and recipe.mixed_precision is True
    assert recipe.model["hidden_size"] == 32 and recipe.model["variant"] == "S/16"
    assert recipe.model["num_layers"] == 4  # the file's other model keys stay
    with pytest.raises(ValueError, match="Unknown recipe key 'epoch'"):
        load_recipe("digits_scratch", ["epoch=3"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        load_recipe("digits_scratch", ["epochs"])
    with pytest.raises(FileNotFoundError, match="digits_scratch"):
        load_recipe("no_such_recipe")


def test_mixed_precision_fit_and_evaluate_command(tmp_path, capsys):
    output = tmp_path / "run"
    overrides = [*TINY_DIGITS, "mixed_precision=true", f"output={output}"]
    metrics = train(load_recipe("digits_scratch", overrides))
    assert keras.config.dtype_policy().name == "float32"  # restored afterwards
    assert math.isfinite(metrics["test_loss"]) and metrics["steps"] == 1437 // 64
    assert (output / "best.keras").is_file() and (output / "metrics.json").is_file()

    model = keras.saving.load_model(output / "model.keras")
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("encoderblock_0").weights[0].dtype == "float32"  # float32 variables

    assert cli.main(["evaluate", str(output / "model.keras"), "--data", "digits:test"]) == 0
    printed = capsys.readouterr().out
    assert f"accuracy {metrics['test_accuracy']:.4f}" in printed and "360 examples" in printed


def _image_folder(root, size=32, per_class=4):
    rng = np.random.default_rng(0)
    for name in ("ants", "bees", "wasps"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 256, (size + i, size, 3), dtype=np.uint8)
            tf.io.write_file(str(root / name / f"{i}.png"), tf.io.encode_png(image))
    return root


def test_finetune_from_official_npz_on_an_image_folder(tmp_path, fixtures_dir):
    npz = fixtures_dir / "vit_token" / "official.npz"
    folder = _image_folder(tmp_path / "images")
    overrides = [
        f"weights={npz}",
        f"data={folder}",
        "image_size=32",
        "batch_size=4",
        "steps=4",
        "steps_per_epoch=2",
        "warmup_steps=1",
        "dev_percent=25",
        "model.semantics=timm",
        "verbose=0",
        f"output={tmp_path / 'run'}",
    ]
    recipe = load_recipe("cifar10_finetune", overrides)

    # The starting point: the checkpoint's encoder, a zero-initialised 3-class head.
    model = build_model(recipe, num_classes=3)
    _, reference = fixture_case("vit_token")
    pooled = model.forward_intermediates(reference["inputs"])["pooled"]
    np.testing.assert_allclose(pooled, reference["features"], atol=1e-5)  # timm's features
    assert model.head.kernel.shape == (48, 3)
    assert not np.any(model.head.kernel.numpy()) and not np.any(model.head.bias.numpy())

    metrics = train(recipe)
    assert metrics["steps"] == 4 and metrics["epochs"] == 2
    assert math.isfinite(metrics["test_loss"])
    tuned = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert tuned.num_classes == 3 and np.any(tuned.head.kernel.numpy())
