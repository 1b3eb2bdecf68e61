"""Bad inputs through the command line: `keras-vit CMD: error: ...` (exit 2), no traceback,
nothing half-written. A few as real subprocesses, the rest through `main()` in-process."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import keras_vit
from keras_vit.data import write_tfrecord
from keras_vit_cli import main as cli

REPO = Path(__file__).resolve().parents[2]
TINY = dict(image_size=16, patch_size=8, hidden_size=24, num_layers=1, num_heads=2, mlp_dim=48)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    keras_vit.ViT(**TINY, num_classes=3, representation_size=12, name="tiny").save(path)
    return path


def png(value=None):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8) if value is None else value
    return tf.io.encode_png(pixels).numpy()


def class_folder(root, per_class=2, classes=("a", "b", "c")):
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(png())
    return root


def fails(argv, capsys):
    """Runs the CLI in-process; returns its last stderr line after checking exit 2."""
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def run_cli(args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "keras_vit_cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


# --- real subprocesses ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_recipe_path_works_from_any_directory(tmp_path):
    # From another directory `pipelines/digits_scratch.yaml` is found in the checkout: the
    # error is about the bad value, not about a missing file.
    result = run_cli(["train", "pipelines/digits_scratch.yaml", "--set", "epochs=-1"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "keras-vit train: error: epochs must be >= 1, got -1."
    )
    missing = run_cli(["train", "pipelines/no_such_recipe.yaml"], tmp_path)
    assert missing.returncode == 2 and "no_such_recipe" in missing.stderr
    assert "Traceback" not in result.stderr + missing.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_a_damaged_image_in_evaluation_data_is_named(tiny_model, tmp_path):
    data = class_folder(tmp_path / "data")
    damaged = data / "b" / "1.png"
    damaged.write_bytes(png()[:40])
    result = run_cli(["evaluate", tiny_model, "--data", data, "--output", tmp_path / "m.json"])
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"keras-vit evaluate: error: Cannot decode {damaged} as a JPEG/PNG/GIF/BMP image: it is "
        "damaged or not an image. Remove or replace it."
    )
    assert "Traceback" not in result.stderr and not (tmp_path / "m.json").exists()


@pytest.mark.slow
def test_a_folder_given_as_an_image_to_predict(tiny_model, tmp_path):
    result = run_cli(["predict", tiny_model, tmp_path])
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"keras-vit predict: error: {tmp_path} is a folder, not an image file."
    )


# --- in-process: the same handler, each case an exact message -------------------------------


def test_a_non_image_in_a_fewshot_folder_is_named_before_any_work(tiny_model, tmp_path, capsys):
    data = class_folder(tmp_path / "data")
    (data / "a" / "readme.jpg").write_text("hello")
    last = fails(["fewshot", "--model", tiny_model, "--data", data], capsys)
    assert last.startswith("keras-vit fewshot: error: 1 of 7 files in ")
    assert f"{data / 'a' / 'readme.jpg'} (starts with b'hello')" in last


def test_a_damaged_image_in_fewshot_data_is_one_sentence(tiny_model, tmp_path, capsys):
    data = class_folder(tmp_path / "data", per_class=4)
    damaged = data / "c" / "3.png"
    damaged.write_bytes(png()[:-20])
    argv = ["fewshot", "--model", tiny_model, "--data", data, "--shots", "1"]
    last = fails([*argv, "--output", tmp_path / "out"], capsys)
    assert last == (
        f"keras-vit fewshot: error: Cannot decode {damaged} as a JPEG/PNG/GIF/BMP image: it is "
        "damaged or not an image. Remove or replace it."
    )
    assert not (tmp_path / "out" / "fewshot.json").exists()


def test_a_tfrecord_label_of_minus_one_is_named_by_its_record(tiny_model, tmp_path, capsys):
    images = np.zeros((3, 8, 8, 3), np.uint8)
    path = tmp_path / "d.tfrecord"
    write_tfrecord(images, [0, 1, 2], str(path))
    with tf.io.TFRecordWriter(str(tmp_path / "e.tfrecord")) as writer:
        feature = {
            "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png()])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[-1])),
        }
        writer.write(
            tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
        )
    last = fails(["evaluate", tiny_model, "--data", tmp_path], capsys)
    assert f"record 0 of {tmp_path / 'e.tfrecord'} has label -1, outside [0, 3)" in last


def test_evaluate_output_that_is_a_folder_fails_before_evaluating(tiny_model, tmp_path, capsys):
    last = fails(["evaluate", tiny_model, "--output", tmp_path], capsys)
    assert last == f"keras-vit evaluate: error: --output {tmp_path} is a folder; name a .json file."


def test_evaluate_output_below_a_file(tiny_model, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    last = fails(["evaluate", tiny_model, "--output", tmp_path / "file" / "m.json"], capsys)
    assert last.startswith("keras-vit evaluate: error: [Errno 17] File exists") or (
        "Not a directory" in last
    )
    assert (tmp_path / "file").read_text() == "x"


def test_evaluate_a_missing_model(tmp_path, capsys):
    last = fails(["evaluate", tmp_path / "none.keras"], capsys)
    assert last == f"keras-vit evaluate: error: Model file not found: {tmp_path / 'none.keras'}"


def test_evaluate_data_with_more_classes_than_the_head(tiny_model, tmp_path, capsys):
    data = class_folder(tmp_path / "data", classes=("a", "b", "c", "d"))
    last = fails(["evaluate", tiny_model, "--data", data], capsys)
    assert "has 4 classes; the model" in last and "3" in last


@pytest.fixture
def without(monkeypatch):
    """Hides modules from ``importlib.util.find_spec`` (what keras_vit.extras checks)."""
    real = importlib.util.find_spec

    def hide(*modules):
        def find_spec(name, *args, **kwargs):
            return None if name in modules else real(name, *args, **kwargs)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return hide


def test_fewshot_output_without_matplotlib_fails_before_any_work(without, tmp_path, capsys):
    without("matplotlib")
    argv = ["fewshot", "--model", tmp_path / "never.keras", "--data", "digits"]
    last = fails([*argv, "--output", tmp_path / "out"], capsys)
    assert last == (
        "keras-vit fewshot: error: keras-vit fewshot --output (its figure) needs matplotlib, "
        'which is not installed: pip install "keras-vit[inspect]" (or "keras-vit[all]" for '
        "every feature)."
    )
    assert not (tmp_path / "out").exists()


def test_tfds_data_without_tensorflow_datasets(without, tiny_model, capsys):
    without("tensorflow_datasets")
    last = fails(["evaluate", tiny_model, "--data", "tfds:cifar10:test"], capsys)
    assert last == (
        "keras-vit evaluate: error: tfds: data sources needs tensorflow_datasets, which is not "
        'installed: pip install "keras-vit[data]" (or "keras-vit[all]" for every feature).'
    )


def test_inspect_output_that_is_a_file(tiny_model, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.png").write_bytes(png())
    (tmp_path / "out").write_text("in the way")
    last = fails(
        ["inspect", "--model", tiny_model, tmp_path / "in", "--output", tmp_path / "out"], capsys
    )
    assert last.startswith("keras-vit inspect: error: ") and str(tmp_path / "out") in last
    assert (tmp_path / "out").read_text() == "in the way"


def test_inspect_a_non_image_file_given_by_name(tiny_model, tmp_path, capsys):
    (tmp_path / "x.png").write_text("not a png")
    last = fails(
        ["inspect", "--model", tiny_model, tmp_path / "x.png", "--output", tmp_path / "o"], capsys
    )
    assert last.startswith(
        f"keras-vit inspect: error: Cannot decode {tmp_path / 'x.png'} as an image"
    )
    assert not list((tmp_path / "o").rglob("*.png"))  # no figure written


def test_inspect_a_folder_without_images(tiny_model, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    last = fails(["inspect", "--model", tiny_model, tmp_path, "--output", tmp_path / "o"], capsys)
    assert last.startswith(
        "keras-vit inspect: error: No images (.jpg, .jpeg, .png, .gif, .bmp) found"
    )


def test_weights_with_a_malformed_pin(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KERAS_VIT_CACHE", str(tmp_path / "cache"))
    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k#sha256=1234"
    last = fails(["convert", name, tmp_path / "o.keras"], capsys)
    assert (
        last
        == "keras-vit convert: error: A sha256 digest must be 64 hexadecimal digits, got '1234'."
    )
    assert not (tmp_path / "o.keras").exists() and not (tmp_path / "cache").exists()


def test_weights_cache_that_is_a_file(tmp_path, capsys, monkeypatch):
    (tmp_path / "cache").write_text("x")
    monkeypatch.setenv("KERAS_VIT_CACHE", str(tmp_path / "cache"))
    last = fails(
        ["convert", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", tmp_path / "o.keras"], capsys
    )
    assert last == (
        f"keras-vit convert: error: The weights cache {tmp_path / 'cache'} is a file, not a "
        "folder: set KERAS_VIT_CACHE to a writable folder"
    )
    assert not (tmp_path / "o.keras").exists()


def test_bad_download_settings_in_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KERAS_VIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_VIT_DOWNLOAD_TIMEOUT", "forever")
    last = fails(["convert", "http://127.0.0.1:9/w.npz", tmp_path / "o.keras"], capsys)
    assert last == (
        "keras-vit convert: error: KERAS_VIT_DOWNLOAD_TIMEOUT must be a number of seconds > 0, "
        "got 'forever'."
    )
