"""``task: mpp`` recipes: pre-training without labels, the backbone it writes, resume."""

import inspect
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vit import MaskedPatchPrediction, ViT
from keras_vit.data.sources import write_tfrecord
from keras_vit.messages import KerasVitWarning
from keras_vit.train.loop import build_mpp_model, save_backbone, train
from keras_vit.train.recipe import DEFAULTS, load_recipe
from keras_vit_cli import main as cli

from test_loop import TINY_MODEL

TINY_MPP = [*TINY_MODEL, "verbose=0", "warmup_steps=1"]


def test_the_recipes_carry_the_papers_settings():
    paper = load_recipe("mpp_pretrain")
    assert paper.task == "mpp" and paper.model["variant"] == "B/16"
    assert paper.mpp == {
        "target": "mean_color",
        "bits": 3,
        "corruption_rate": 0.5,
        "mask_rate": 0.8,
        "random_rate": 0.1,
        "downsample": 4,
    }
    assert (paper.optimizer, paper.learning_rate, paper.warmup_steps) == ("adam", 2e-4, 10_000)
    assert (paper.decay, paper.batch_size, paper.steps) == ("cosine", 4096, 1_000_000)
    assert paper.augment["inception_crop"] and paper.augment["flip"]
    small = load_recipe("mpp_digits", ["mpp.target=downsampled_color", "mpp.downsample=2"])
    assert small.mpp["target"] == "downsampled_color" and small.mpp["bits"] == 3
    assert DEFAULTS["task"] == "classify"


@pytest.mark.parametrize(
    "override, message",
    [
        ("task=bert", "task must be one of"),
        ("mpp.target=colour", "mpp.target must be one of"),
        ("mpp.bits=0", "mpp.bits must be >= 1"),
        ("mpp.corruption_rate=2", "mpp.corruption_rate must be <= 1"),
        ("mpp.random_rate=0.5", r"mpp.mask_rate \+ mpp.random_rate must be <= 1"),
        (
            "mpp.mask_ratio=0.5",
            r"Unknown masked patch prediction setting\(s\) \['mpp.mask_ratio'\]",
        ),
        ("augment.mixup=0.2", r"augment \['mixup'\] mix labels; task=mpp trains without labels"),
    ],
)
def test_bad_task_settings_are_refused_by_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_recipe("mpp_digits", [override])


def test_pretrain_on_digits_then_finetune_the_backbone(tmp_path, capsys):
    output = tmp_path / "mpp"
    short = ["steps=4", "steps_per_epoch=2"]
    args = ["train", "mpp_digits", "--output", str(output), "--set", *TINY_MPP, *short]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "masked-patch accuracy" in printed and str(output / "backbone.npz") in printed
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["steps"] == 4 and 0 <= metrics["test_accuracy"] <= 1
    assert set(metrics["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert math.isfinite(metrics["test_loss"]) and not (output / "backup").exists()

    pretrained = keras.saving.load_model(output / "model.keras", safe_mode=True)
    assert isinstance(pretrained, MaskedPatchPrediction) and pretrained.num_classes == 8
    backbone = keras.saving.load_model(output / "backbone.keras", safe_mode=True)
    assert isinstance(backbone, ViT) and not backbone.include_top
    for a, b in zip(pretrained.backbone.get_weights(), backbone.get_weights()):
        np.testing.assert_array_equal(a, b)

    # The backbone fine-tunes through the ordinary recipe: a new 10-class head.
    finetune = tmp_path / "finetune"
    overrides = [*TINY_MPP, *short, f"weights={output / 'backbone.npz'}"]
    recipe = load_recipe("digits_scratch", [*overrides, f"output={finetune}"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train(recipe)
    assert any(
        issubclass(w.category, KerasVitWarning) and "no 'head' layer" in str(w.message)
        for w in caught
    )
    assert metrics["steps"] == 4
    tuned = keras.saving.load_model(finetune / "model.keras")
    assert tuned.num_classes == 10 and tuned.semantics == "official"


def test_pretrain_on_a_folder_of_images_without_classes(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        image = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
        tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(image))
    overrides = [
        *TINY_MPP,
        f"data={folder}",
        "eval_data=null",
        "dev_percent=25",
        "image_size=16",
        "channels=3",
        "batch_size=4",
        "steps=4",
        "steps_per_epoch=2",
        "model.patch_size=4",
        "augment.inception_crop=true",
        "augment.flip=true",
        f"output={tmp_path / 'run'}",
    ]
    metrics = train(load_recipe("mpp_digits", overrides))
    assert metrics["steps"] == 4 and metrics["epochs"] == 2
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert model.num_classes == 512  # 3-bit RGB
    with pytest.raises(ValueError, match="images without classes.*task=mpp"):
        train(load_recipe("digits_scratch", [*overrides[: -len(TINY_MPP)], *TINY_MPP]))


def test_pretrain_on_tfrecords_in_mixed_bfloat16(tmp_path):
    rng = np.random.default_rng(1)
    records = tmp_path / "images.tfrecord"
    write_tfrecord(
        rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8), np.zeros(16, "int64"), records
    )
    overrides = [
        *TINY_MPP,
        f"data={records}",
        "eval_data=digits:test",
        "batch_size=8",
        "epochs=1",
        "mixed_precision=true",
        f"output={tmp_path / 'run'}",
    ]
    metrics = train(load_recipe("mpp_digits", overrides))
    assert metrics["steps"] == 2 and math.isfinite(metrics["test_loss"])
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert model.dtype_policy.name == "mixed_bfloat16" and model.mask_token.dtype == "float32"


def test_the_pixel_target_has_no_accuracy(tmp_path):
    recipe = load_recipe("mpp_digits", [*TINY_MPP, "mpp.target=pixels", "epochs=1"])
    model = build_mpp_model(recipe)
    assert model.num_classes is None and model.head.units == 4  # a 2 x 2 grey patch
    metrics = train(recipe.replace(output=str(tmp_path / "run")))
    assert metrics["test_accuracy"] is None and "val_accuracy" not in metrics["history"]


@pytest.mark.skipif(
    "num_register_tokens" not in inspect.signature(ViT).parameters,
    reason="this ViT has no register tokens yet",
)
def test_a_backbone_the_official_layout_cannot_hold_is_kept_as_keras(tmp_path):
    backbone = ViT(
        image_size=8,
        patch_size=2,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        mlp_dim=32,
        channels=1,
        include_top=False,
        num_register_tokens=2,
    )
    with pytest.warns(KerasVitWarning, match="backbone.npz not written"):
        files = save_backbone(backbone, tmp_path)
    assert files["backbone_npz"] is None and not (tmp_path / "backbone.npz").exists()
    loaded = keras.saving.load_model(files["backbone_keras"], safe_mode=True)
    assert loaded.num_prefix_tokens == 3


def test_evaluate_refuses_a_pretraining_model(tmp_path):
    recipe = load_recipe("mpp_digits", TINY_MPP)
    path = tmp_path / "mpp.keras"
    build_mpp_model(recipe).save(path)
    assert cli.main(["evaluate", str(path), "--data", "digits:test"]) == 2


@pytest.mark.slow
def test_a_sigkilled_pretraining_resumes_with_the_planned_steps(tmp_path):
    epochs, steps_per_epoch = 25, 1437 // 64
    output = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "keras_vit_cli",
        "train",
        "mpp_digits",
        "--output",
        str(output),
        "--set",
        *TINY_MPP,
        f"epochs={epochs}",
    ]
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 240
    try:
        while first.poll() is None and not list((output / "backup").glob("epoch-*.weights.h5")):
            assert time.monotonic() < deadline, "no backup written in time"
            time.sleep(0.05)
        time.sleep(1.0)  # somewhere in a later epoch, maybe mid-write
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    second = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["steps"] == epochs * steps_per_epoch
    assert 0 < len(metrics["history"]["loss"]) < epochs  # resumed, not started over
    assert (output / "backbone.npz").is_file()


@pytest.mark.slow
def test_pretraining_mirrored_over_two_cpu_devices(tmp_path):
    script = f"""
import json
from keras_vit.train.loop import train
from keras_vit.train.recipe import load_recipe
recipe = load_recipe("mpp_digits", {TINY_MPP!r} + ["epochs=2", "strategy=mirrored",
    "cpu_devices=2", "output={tmp_path / "run"}"])
metrics = train(recipe)
print(json.dumps({{k: metrics[k] for k in ("steps", "num_replicas", "test_loss")}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["num_replicas"] == 2 and report["steps"] == 2 * (1437 // 64)
    assert math.isfinite(report["test_loss"])
