"""Bad data, found early and by name: non-image files, damaged images, bad TFRecord labels,
missing extras. Each case asserts the exact class of outcome and its message."""

import importlib.util
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_vit import data
from keras_vit.analysis import fewshot
from keras_vit.data import images as image_io
from keras_vit.data import sources
from keras_vit.extras import MissingExtraError

RNG = np.random.default_rng(0)


def png(height=12, width=12, channels=3, value=None):
    pixels = (
        RNG.integers(0, 256, (height, width, channels), dtype=np.uint8)
        if value is None
        else np.full((height, width, channels), value, np.uint8)
    )
    return tf.io.encode_png(pixels).numpy()


def image_folder(root, per_class=3, classes=("cat", "dog")):
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(png())
    return root


def write_records(path, examples):
    """TFRecord of ``examples``: dicts of feature name -> bytes or int (any of them missing)."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in examples:
            feature = {}
            for key, value in example.items():
                if isinstance(value, bytes):
                    feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
                else:
                    feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )
    return str(path)


def drain(dataset):
    return [label for _, label in dataset.as_numpy_iterator()]


# --- image folders: checked when listed --------------------------------------------------


@pytest.mark.parametrize(
    "name, content, described",
    [
        ("notes.jpg", b"not an image at all", "starts with b'not an i'"),
        ("empty.png", b"", "an empty file"),
        ("error.jpeg", b"<!DOCTYPE html><html>403</html>", "starts with b'<!DOCTYP'"),
        ("model.bmp", b"PK\x03\x04zipped", r"starts with b'PK\x03\x04zipp'"),
    ],
)
def test_a_file_that_is_no_image_is_named_when_the_folder_is_listed(
    tmp_path, name, content, described
):
    image_folder(tmp_path)
    (tmp_path / "dog" / name).write_bytes(content)
    with pytest.raises(ValueError) as caught:
        data.open_source(str(tmp_path))
    message = str(caught.value)
    assert message.startswith(f"1 of 7 files in {tmp_path} are not JPEG/PNG/GIF/BMP images")
    assert f"{tmp_path / 'dog' / name} ({described})" in message


def test_many_bad_files_are_counted_and_the_first_ones_named(tmp_path):
    image_folder(tmp_path)
    for i in range(8):
        (tmp_path / "cat" / f"bad{i}.jpg").write_text("text")
    with pytest.raises(
        ValueError, match=r"8 of 14 files .*bad4\.jpg \(starts with b'text'\), and 3 more\."
    ):
        data.open_source(str(tmp_path))


def test_hidden_files_and_folders_are_not_listed(tmp_path):
    image_folder(tmp_path)
    (tmp_path / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # macOS metadata
    (tmp_path / "dog" / ".thumbnails").mkdir()
    (tmp_path / "dog" / ".thumbnails" / "0.png").write_bytes(b"junk")
    source = data.open_source(str(tmp_path))
    assert source.num_examples == 6 and len(drain(source.dataset)) == 6


def test_an_unlabeled_folder_is_checked_too(tmp_path):
    (tmp_path / "a.png").write_bytes(png())
    (tmp_path / "b.gif").write_text("GIF? no")
    with pytest.raises(ValueError, match=r"1 of 2 files .*/b\.gif \(starts with b'GIF\? no'\)"):
        sources.load_images(str(tmp_path), 8)


# --- damaged images: named when the stream reaches them ---------------------------------


@pytest.mark.parametrize("position", ["middle", "last"])
def test_a_damaged_image_stops_the_stream_naming_its_file(tmp_path, position):
    image_folder(tmp_path, per_class=4)
    damaged = tmp_path / "dog" / ("1.png" if position == "middle" else "zz.png")
    damaged.write_bytes(png()[:40])  # a PNG header, then cut short
    source = data.open_source(str(tmp_path))  # the header is fine: found when decoded
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        drain(source.dataset)
    assert f"Cannot decode {damaged} as a JPEG/PNG/GIF/BMP image" in caught.value.message
    assert "Remove or replace it" in caught.value.message


def test_named_decode_errors_turns_the_failure_into_one_sentence(tmp_path):
    image_folder(tmp_path)
    damaged = tmp_path / "cat" / "0.png"
    damaged.write_bytes(png()[:33])
    source = data.open_source(str(tmp_path))
    with pytest.raises(ValueError) as caught, data.named_decode_errors():
        drain(source.dataset)
    assert str(caught.value) == (
        f"Cannot decode {damaged} as a JPEG/PNG/GIF/BMP image: it is damaged or not an image. "
        "Remove or replace it."
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="other"), data.named_decode_errors():
        raise tf.errors.InvalidArgumentError(None, None, "some other failure")


def test_a_damaged_image_is_named_through_the_training_stream(tmp_path):
    image_folder(tmp_path, per_class=4)
    damaged = tmp_path / "cat" / "2.png"
    damaged.write_bytes(png()[:-30])
    stream = data.train_stream(data.open_source(str(tmp_path)), 16, batch_size=2, seed=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"Cannot decode {damaged}"):
        for _ in stream:
            pass


def test_a_damaged_image_is_named_in_few_shot_data(tmp_path):
    image_folder(tmp_path / "train", per_class=2)
    image_folder(tmp_path / "test", per_class=2)
    damaged = tmp_path / "test" / "dog" / "1.png"
    damaged.write_bytes(png()[:50])
    train, test, _ = fewshot.load_fewshot_data(str(tmp_path), (16, 16), 3, batch_size=2)
    assert len(np.concatenate([labels for _, labels in train])) == 4
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"Cannot decode {damaged}"):
        for _ in test:
            pass


def test_images_before_a_damaged_one_arrive_in_order(tmp_path):
    image_folder(tmp_path, per_class=3, classes=("a",))
    good = data.open_source(str(tmp_path))
    expected = [image for image, _ in good.dataset.as_numpy_iterator()]
    order = [
        str(p)
        for p in np.array(sorted((tmp_path / "a").iterdir()))[
            np.random.default_rng(0).permutation(3)
        ]
    ]
    with open(order[2], "r+b") as file:  # damage the last one in stream order
        file.truncate(60)
    got = []
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"Cannot decode {order[2]}"):
        for image, _ in data.open_source(str(tmp_path)).dataset.as_numpy_iterator():
            got.append(image)
    assert len(got) == 2
    for image, reference in zip(got, expected):
        np.testing.assert_array_equal(image, reference)


# --- TFRecords: labels and image headers checked in the counting pass ---------------------


@pytest.mark.parametrize(
    "label, num_classes, message",
    [
        (-1, None, "record 1 of {path} has label -1, outside \\[0, classes\\)"),
        (3, 3, "record 1 of {path} has label 3, outside \\[0, 3\\)"),
        (7, 3, "record 1 of {path} has label 7, outside \\[0, 3\\)"),
    ],
)
def test_a_tfrecord_label_outside_the_classes_is_refused_with_its_index(
    tmp_path, label, num_classes, message
):
    path = write_records(
        tmp_path / "d.tfrecord",
        [
            {"image": png(), "label": 0},
            {"image": png(), "label": label},
            {"image": png(), "label": 1},
        ],
    )
    with pytest.raises(ValueError, match="Bad records in .*" + message.format(path=path)):
        data.open_source(path, num_classes=num_classes)


def test_tfrecord_records_are_named_by_file_and_index(tmp_path):
    first = write_records(tmp_path / "a.tfrecord", [{"image": png(), "label": 0}] * 3)
    second = write_records(
        tmp_path / "b.tfrecord", [{"image": png(), "label": 1}, {"image": b"GIF89", "label": 1}]
    )
    with pytest.raises(ValueError) as caught:
        data.open_source(str(tmp_path))
    assert f"record 1 of {second}'s image is no JPEG/PNG/GIF/BMP (starts with b'GIF89')" in str(
        caught.value
    )
    assert first not in str(caught.value).split(": ", 1)[1]


@pytest.mark.parametrize(
    "example, described",
    [
        ({"image": b""}, "has no 'label'"),
        ({"label": 1}, "has no 'image'"),
    ],
)
def test_a_record_without_a_feature_is_named(tmp_path, example, described):
    path = write_records(tmp_path / "d.tfrecord", [{"image": png(), "label": 0}, example])
    with pytest.raises(ValueError, match=f"record 1 of {path} {described}"):
        data.open_source(path)


def test_a_label_of_the_wrong_type_is_a_value_error(tmp_path):
    path = write_records(tmp_path / "d.tfrecord", [{"image": png(), "label": b"cat"}])
    with pytest.raises(ValueError, match="expected tf.train.Example records with 'image'"):
        data.open_source(path)


def test_a_file_that_is_not_a_tfrecord_is_named(tmp_path):
    (tmp_path / "d.tfrecord").write_bytes(os.urandom(64))
    with pytest.raises(ValueError, match=f"{tmp_path / 'd.tfrecord'} is not a readable TFRecord"):
        data.open_source(str(tmp_path / "d.tfrecord"))


def test_an_empty_tfrecord_file_is_a_value_error(tmp_path):
    path = write_records(tmp_path / "d.tfrecord", [])
    with pytest.raises(ValueError, match="No records in the TFRecord file"):
        data.open_source(path)


def test_a_damaged_tfrecord_image_is_named_by_its_record(tmp_path):
    path = write_records(
        tmp_path / "d.tfrecord",
        [{"image": png(), "label": 0}, {"image": png()[:45], "label": 1}],
    )
    source = data.open_source(path)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"Cannot decode record 1 of {path}"):
        drain(source.dataset)


# --- the class count a model gives ---------------------------------------------------------


def test_a_source_with_more_classes_than_the_model_is_refused(tmp_path):
    image_folder(tmp_path, classes=("a", "b", "c"))
    with pytest.raises(ValueError, match=f"{tmp_path} has 3 classes; the model has 2"):
        data.open_source(str(tmp_path), num_classes=2)
    assert data.open_source(str(tmp_path), num_classes=5).num_classes == 5  # a larger head: fine


@pytest.mark.parametrize(
    "value, message",
    [(0, "num_classes must be >= 1, got 0"), (2.5, "num_classes must be an int, got 2.5")],
)
def test_a_bad_class_count_is_refused(value, message):
    with pytest.raises(ValueError, match=message):
        data.open_source("digits", num_classes=value)


# --- tfds without tensorflow_datasets --------------------------------------------------------


@pytest.fixture
def without_tfds(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "tensorflow_datasets" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_tfds_data_without_the_extra_names_the_install_command(without_tfds, tmp_path):
    with pytest.raises(MissingExtraError) as caught:
        data.open_source("tfds:cifar10", data_dir=str(tmp_path))
    assert str(caught.value) == (
        "tfds: data sources needs tensorflow_datasets, which is not installed: "
        'pip install "keras-vit[data]" (or "keras-vit[all]" for every feature).'
    )


def test_a_prepared_tfds_folder_without_the_extra_names_the_install_command(without_tfds, tmp_path):
    (tmp_path / "1.0.0").mkdir()
    (tmp_path / "1.0.0" / "dataset_info.json").write_text("{}")
    with pytest.raises(MissingExtraError, match='pip install "keras-vit\\[data\\]"'):
        data.open_source(str(tmp_path))


# --- single images and writing ---------------------------------------------------------------


def test_load_image_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"Image file not found: {tmp_path / 'x.png'}"):
        data.load_image(tmp_path / "x.png", 8)
    with pytest.raises(IsADirectoryError, match=f"{tmp_path} is a folder, not an image file"):
        data.load_image(tmp_path, 8)
    (tmp_path / "x.png").write_text("text")
    with pytest.raises(ValueError, match=f"Cannot decode {tmp_path / 'x.png'} as an image"):
        data.load_image(tmp_path / "x.png", 8)
    (tmp_path / "y.png").write_bytes(png())
    with pytest.raises(ValueError, match="fit must be one of \\('resize', 'crop'\\), got 'squash'"):
        data.load_image(tmp_path / "y.png", 8, fit="squash")


def test_crop_fits_a_wide_photo_without_distortion(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 10:30] = RNG.integers(0, 256, (20, 20, 3), dtype=np.uint8)  # the centred square
    (tmp_path / "wide.png").write_bytes(tf.io.encode_png(wide).numpy())
    cropped = data.load_image(tmp_path / "wide.png", 20, fit="crop")
    np.testing.assert_array_equal(cropped, wide[:, 10:30].astype("float32"))
    squashed = data.load_image(tmp_path / "wide.png", 20)  # the default stretches it
    assert squashed.shape == (20, 20, 3) and not np.array_equal(squashed, cropped)
    tall = data.load_image(tmp_path / "wide.png", (10, 40), fit="crop")  # wider than the photo
    np.testing.assert_array_equal(tall, wide[5:15].astype("float32"))


@pytest.mark.parametrize(
    "images, labels, message",
    [
        (np.zeros((2, 4, 4, 3), np.float32), [0, 1], "images must be a uint8 array"),
        (np.zeros((4, 4, 3), np.uint8), [0], "images must be a uint8 array"),
        (
            np.zeros((2, 4, 4, 2), np.uint8),
            [0, 1],
            "1, 3 or 4 channels; got uint8 \\(2, 4, 4, 2\\)",
        ),
        (np.zeros((2, 4, 4, 3), np.uint8), [0], "labels must be 2 integer class ids"),
        (np.zeros((2, 4, 4, 3), np.uint8), [0.0, 1.0], "labels must be 2 integer class ids"),
        (np.zeros((2, 4, 4, 3), np.uint8), [0, -1], "labels must be class ids >= 0; got -1"),
    ],
)
def test_write_tfrecord_refuses_bad_input_and_writes_nothing(tmp_path, images, labels, message):
    with pytest.raises(ValueError, match=message):
        sources.write_tfrecord(images, labels, str(tmp_path / "out.tfrecord"))
    assert os.listdir(tmp_path) == []


def test_signatures_cover_what_tensorflow_decodes():
    pixels = RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    encoded = {"PNG": tf.io.encode_png(pixels), "JPEG": tf.io.encode_jpeg(pixels)}
    for name, blob in encoded.items():
        header = blob.numpy()[:8]
        assert image_io.image_format(header) == name
        assert image_io.decode_image(blob, 3).shape == (4, 4, 3)
    assert image_io.image_format(b"BM6\x00\x00\x00") == "BMP"
    assert image_io.image_format(b"GIF87a..") == "GIF" and image_io.image_format(b"RIFF") is None


@pytest.mark.parametrize("fmt", ["BMP", "GIF"])
def test_a_grayscale_model_reads_bmp_and_gif(tmp_path, fmt):
    # TensorFlow decodes BMP and GIF to RGB only (channels=1 fails inside the decoder).
    from PIL import Image

    rgb = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / f"x.{fmt.lower()}", format=fmt)
    decoded_rgb = data.load_image(tmp_path / f"x.{fmt.lower()}", (6, 8), channels=3)
    if fmt == "BMP":  # lossless
        np.testing.assert_array_equal(decoded_rgb, rgb.astype("float32"))
    luma = decoded_rgb @ np.array([0.2989, 0.587, 0.114], np.float32)  # ITU-R 601
    gray = data.load_image(tmp_path / f"x.{fmt.lower()}", (6, 8), channels=1)
    assert gray.shape == (6, 8, 1)
    np.testing.assert_allclose(gray[..., 0], np.round(luma), atol=1.0)
