"""Data sources and tf.data pipelines: digits, image folders, TFRecords, tfds."""

import numpy as np
import pytest
import tensorflow as tf

from keras_vit import data


def _write_png_folder(root, images_per_class=3):
    """Two classes of small RGB PNGs with different sizes; returns the pixels by class."""
    pixels = {}
    rng = np.random.default_rng(0)
    for name in ["cat", "dog"]:
        (root / name).mkdir(parents=True)
        pixels[name] = []
        for i in range(images_per_class):
            image = rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8)
            tf.io.write_file(str(root / name / f"{i}.png"), tf.io.encode_png(image))
            pixels[name].append(image)
    (root / "notes.txt").write_text("not a class folder")
    return pixels


def test_digits_source_splits():
    train = data.open_source("digits:train")
    test = data.open_source("digits", split="test")
    assert (train.num_examples, test.num_examples, train.num_classes) == (1437, 360, 10)
    image, label = next(iter(train.dataset))
    assert image.shape == (8, 8, 1) and image.dtype == tf.uint8 and label.dtype == tf.int64


def test_folder_source_reads_every_image_with_sorted_class_labels(tmp_path):
    pixels = _write_png_folder(tmp_path)
    source = data.open_source(str(tmp_path), channels=3)
    assert source.class_names == ["cat", "dog"] and source.num_examples == 6
    examples = list(source.dataset.as_numpy_iterator())
    assert sorted(label for _, label in examples) == [0, 0, 0, 1, 1, 1]
    assert [label for _, label in examples] != [0, 0, 0, 1, 1, 1]  # file list shuffled once
    by_shape = {(image.shape, label): image for image, label in examples}
    for label, name in enumerate(["cat", "dog"]):
        for image in pixels[name]:  # every image decoded losslessly, with its class
            np.testing.assert_array_equal(by_shape[(image.shape, label)], image)


def test_tfrecord_source_round_trip(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    labels = np.array([0, 2, 1, 2, 0])
    path = tmp_path / "digits.tfrecord"
    data.write_tfrecord(images, labels, str(path))
    for spec in (str(path), str(tmp_path), str(tmp_path / "*.tfrecord")):
        source = data.open_source(spec, channels=1)
        assert (source.num_examples, source.num_classes) == (5, 3)
        read = list(source.dataset.as_numpy_iterator())
        np.testing.assert_array_equal(np.stack([x for x, _ in read]), images)
        np.testing.assert_array_equal([y for _, y in read], labels)


def test_tfds_source_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6, data_dir=str(tmp_path)):
        source = data.open_source("tfds:mnist:train", channels=3, data_dir=str(tmp_path))
        images = [x for x, _ in source.dataset.as_numpy_iterator()]
    assert source.num_classes == 10
    assert len(images) == 6 and images[0].shape == (28, 28, 3)  # grayscale -> RGB


def test_tfds_never_downloads_unless_asked(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(FileNotFoundError, match="not prepared"):
        data.open_source("tfds:cifar10", data_dir=str(tmp_path))


@pytest.mark.parametrize(
    "spec, error",
    [("/no/such/folder", FileNotFoundError), ("digits:validation", ValueError)],
)
def test_bad_sources_raise(spec, error):
    with pytest.raises(error):
        data.open_source(spec)


def test_dev_split_is_exact_disjoint_and_spread():
    ids = np.arange(200)[:, None, None, None]
    source = data.Source(
        tf.data.Dataset.from_tensor_slices((ids, np.zeros(200, "int64"))),
        num_classes=1,
        num_examples=200,
    )
    train, dev = data.split_dev(source, 2)
    train_ids = [int(x.ravel()[0]) for x, _ in train.dataset.as_numpy_iterator()]
    dev_ids = [int(x.ravel()[0]) for x, _ in dev.dataset.as_numpy_iterator()]
    assert (train.num_examples, dev.num_examples) == (196, 4) == (len(train_ids), len(dev_ids))
    assert sorted(train_ids + dev_ids) == list(range(200))
    assert dev_ids == [49, 99, 149, 199]
    with pytest.raises(ValueError, match="dev_percent"):
        data.split_dev(source, 100)


def test_train_stream_augments_to_model_input(tmp_path):
    _write_png_folder(tmp_path, images_per_class=4)
    source = data.open_source(str(tmp_path))
    batches = data.train_stream(
        source, 16, batch_size=4, augment={"mixup": 1.0}, seed=3, deterministic=True
    )
    images, labels = next(iter(batches))
    assert images.shape == (4, 16, 16, 3) and labels.shape == (4, 2)
    assert float(tf.reduce_min(images)) >= -1.0 and float(tf.reduce_max(images)) <= 1.0
    np.testing.assert_allclose(tf.reduce_sum(labels, -1), 1.0, atol=1e-6)
    labels = labels.numpy()
    assert np.any((labels > 0.01) & (labels < 0.99))  # mixed labels are soft
    assert sum(1 for _ in batches) == 2  # 8 examples, incomplete batches dropped


def test_train_stream_deterministic_mode_repeats_exactly():
    source = data.open_source("digits:test")

    def first_batches():
        batches = data.train_stream(source, 8, 32, seed=5, deterministic=True)
        return [x.numpy() for x, _ in batches.take(3)]

    for a, b in zip(first_batches(), first_batches()):
        np.testing.assert_array_equal(a, b)


def test_train_stream_randaugment_and_cutmix_run():
    source = data.open_source("digits:test")
    batches = data.train_stream(
        source,
        8,
        16,
        augment={"randaugment": {"num_ops": 2, "factor": 0.5}, "cutmix": 1.0, "flip": False},
    )
    images, labels = next(iter(batches))
    assert images.shape == (16, 8, 8, 1) and labels.shape == (16, 10)


def test_unknown_augmentation_is_an_error():
    with pytest.raises(ValueError, match="Unknown augmentation 'blur'"):
        data.train_stream(data.open_source("digits:test"), 8, 16, augment={"blur": 1})


def test_eval_stream_resizes_and_scales_in_order():
    (_, _), (x_test, y_test) = data.load_digits()
    batches = data.eval_stream(data.open_source("digits:test"), 8, 100)
    images, labels = next(iter(batches))
    np.testing.assert_allclose(images.numpy(), x_test[:100] / 127.5 - 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels.numpy().argmax(-1), y_test[:100])


def _image_only_records(path, images, labels=None):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, image in enumerate(images):
            feature = {
                "image": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[tf.io.encode_png(image).numpy()])
                )
            }
            if labels is not None and labels[i] is not None:
                feature["label"] = tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[labels[i]])
                )
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def test_tfrecords_without_labels_are_an_unlabeled_source(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    _image_only_records(tmp_path / "unlabeled.tfrecord", images)
    source = data.open_source(str(tmp_path / "unlabeled.tfrecord"), channels=1)
    assert not source.labelled and source.num_classes is None and source.num_examples == 3
    decoded = [image for image, _ in source.dataset.as_numpy_iterator()]
    np.testing.assert_array_equal(np.stack(decoded), images)
    _image_only_records(tmp_path / "mixed.tfrecord", images, labels=[1, None, 0])
    with pytest.raises(ValueError, match=r"record 1 of .*mixed.tfrecord has no 'label'"):
        data.open_source(str(tmp_path / "mixed.tfrecord"), channels=1)
