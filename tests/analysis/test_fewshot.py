"""Few-shot linear evaluation: the closed-form probe, shot sampling, data
reading and the ``keras-vit fewshot`` command."""

import json
import struct

import numpy as np
import pytest

import keras_vit
from keras_vit.analysis import fewshot
from keras_vit_cli.main import main


def clustered(rng, classes, per_class, dim, spread):
    """Features around ``classes`` random centres, labels in order."""
    centres = rng.normal(size=(classes, dim)) * 10
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + rng.normal(size=(len(labels), dim)) * spread, labels


def test_separable_features_reach_100_percent():
    rng = np.random.default_rng(0)
    train_x, train_y = clustered(rng, 5, 30, 64, 0.5)
    test_x, test_y = train_x[::-1] + rng.normal(size=train_x.shape) * 0.5, train_y[::-1]
    results = fewshot.fewshot_evaluate(train_x, train_y, test_x, test_y, shots=(1, 5, 25))
    for shots in (1, 5, 25):
        assert results[shots]["accuracies"] == [1.0, 1.0, 1.0], shots
        assert results[shots]["std"] == 0.0


def test_noise_features_stay_at_chance():
    rng = np.random.default_rng(1)
    classes = 10
    train_x, test_x = rng.normal(size=(500, 32)), rng.normal(size=(3000, 32))
    train_y, test_y = rng.integers(0, classes, 500), rng.integers(0, classes, 3000)
    results = fewshot.fewshot_evaluate(
        train_x, train_y, test_x, test_y, shots=(5, 25), num_seeds=5, num_classes=classes
    )
    for shots in (5, 25):
        assert abs(results[shots]["mean"] - 1.0 / classes) < 0.03, results[shots]
        assert results[shots]["std"] > 0.0  # other draws, other probes


@pytest.mark.parametrize("samples", [20, 200])  # fewer and more examples than features
def test_probe_equals_ridge_regression_of_the_whitened_features(samples):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(2)
    features, labels = rng.normal(size=(samples, 40)) * 3 + 1, rng.integers(0, 4, samples)
    labels[:4] = np.arange(4)
    probe = fewshot.fit_linear_probe(features, labels, 4, l2_reg=16.0)
    whitened = (features - features.mean(0)) / (features.std(0) + 1e-5)
    design = np.concatenate([whitened, np.full((samples, 1), 100.0)], axis=1)
    targets = 2 * np.eye(4)[labels] - 1
    ridge = Ridge(alpha=16.0, fit_intercept=False, solver="svd").fit(design, targets)
    np.testing.assert_allclose(probe.weights, ridge.coef_.T, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(probe.predict(features), ridge.predict(design).argmax(1))


def test_shots_are_nested_per_seed_and_checked():
    labels = np.repeat(np.arange(3), 8)
    five = fewshot.sample_shots(labels, 3, 5, seed=4)
    one = fewshot.sample_shots(labels, 3, 1, seed=4)
    assert np.bincount(labels[five]).tolist() == [5, 5, 5]
    assert set(one) <= set(five)
    assert not np.array_equal(five, fewshot.sample_shots(labels, 3, 5, seed=5))
    with pytest.raises(ValueError, match="10-shot evaluation needs 10 .* class 0 has 8"):
        fewshot.sample_shots(labels, 3, 10, seed=0)


def write_colour_folder(root, per_class):
    """Class folders of noisy flat-colour PNGs: red, green and blue."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for index, name in enumerate(["blue", "green", "red"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (12, 12, 3))
            pixels[..., 2 - index] += 180
            Image.fromarray(pixels.astype("uint8")).save(root / name / f"{i}.png")


def test_folder_without_splits_is_split_per_class(tmp_path):
    write_colour_folder(tmp_path, per_class=6)
    train, test, names = fewshot.load_fewshot_data(str(tmp_path), (16, 16), 1, batch_size=4)
    assert names == ["blue", "green", "red"]
    train_labels = np.concatenate([labels for _, labels in train])
    images, test_labels = map(np.concatenate, zip(*test))
    assert np.bincount(train_labels).tolist() == [3, 3, 3]
    assert np.bincount(test_labels).tolist() == [3, 3, 3]
    assert images.shape == (9, 16, 16, 1) and -1.0 <= images.min() < images.max() <= 1.0


def test_tfds_folder_is_read_without_download(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    rng = np.random.default_rng(4)

    def examples(count):
        return [
            (i, {"image": rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), "label": i % 2})
            for i in range(count)
        ]

    tfds.dataset_builders.store_as_tfds_dataset(
        name="tiny_pairs",
        version="1.0.0",
        data_dir=str(tmp_path),
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(8, 8, 3)),
                "label": tfds.features.ClassLabel(names=["a", "b"]),
            }
        ),
        split_datasets={"train": examples(6), "test": examples(4)},
        disable_shuffling=True,
    )
    train, test, names = fewshot.load_fewshot_data(str(tmp_path), (16, 16), 3, batch_size=8)
    images, labels = map(np.concatenate, zip(*train))
    assert names == ["a", "b"] and images.shape == (6, 16, 16, 3)
    assert labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert sum(len(batch[1]) for batch in test) == 4


def test_fewshot_command_on_an_image_folder(tmp_path, capsys):
    folder = tmp_path / "colours"
    write_colour_folder(folder / "train", per_class=5)
    write_colour_folder(folder / "test", per_class=4)
    model_path = tmp_path / "tiny.keras"
    keras_vit.ViT(
        image_size=16,
        patch_size=8,
        hidden_size=24,
        num_layers=1,
        num_heads=2,
        mlp_dim=48,
        num_classes=3,
        representation_size=12,
        name="tiny",
    ).save(model_path)
    output = tmp_path / "out"
    assert (
        main(
            [
                "fewshot",
                "--model",
                str(model_path),
                "--data",
                str(folder),
                "--shots",
                "1,5",
                "--output",
                str(output),
            ]
        )
        == 0
    )
    assert "5-shot accuracy" in capsys.readouterr().out
    report = json.loads((output / "fewshot.json").read_text())
    assert report["classes"] == 3 and set(report["results"]) == {"1", "5"}
    assert report["results"]["5"]["mean"] == 1.0  # colours are easy, even for random features
    png = (output / "fewshot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (640, 480)
    assert main(["fewshot", "--model", str(model_path), "--data", str(folder), "--shots", "6"]) == 2
    assert "6-shot evaluation needs 6" in capsys.readouterr().err
