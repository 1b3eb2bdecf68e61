"""Data sources: the one way keras-vit opens images with labels.

Sources (``open_source``) yield unbatched ``(image uint8 (height, width,
channels), label int64 ())`` pairs:

- ``"digits[:SPLIT]"``: scikit-learn's digits (1,797 real 8x8 grayscale scans of
  handwritten digits shipped inside the package: no download);
- ``"tfds:NAME[:SPLIT]"``: a TensorFlow Datasets data set, read from
  ``data_dir``; never downloads unless ``download=True``;
- a directory with one subfolder of images per class (sorted names);
- TFRecord files (a file, a glob or a directory of ``*.tfrecord``) of
  ``tf.train.Example`` with ``image`` (encoded bytes) and ``label`` (int64).

``keras_vit.data.streams`` turns a source into training and evaluation batches.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from keras_vit.atomic import atomic_path
from keras_vit.data.images import decode_image

AUTOTUNE = tf.data.AUTOTUNE
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
TFRECORD_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
}


def load_digits(test_fraction=0.2, seed=0):
    """The built-in digits, split into train and test.

    Args:
        test_fraction: float. Fraction held out for testing (stratified).
        seed: int. Seed of the split.

    Returns:
        ``((x_train, y_train), (x_test, y_test))`` with images uint8
        ``(n, 8, 8, 1)`` in [0, 255] and int64 labels ``(n,)`` in 0..9.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    digits = sk_load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype("uint8")[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        digits.target.astype("int64"),
        test_size=test_fraction,
        random_state=seed,
        stratify=digits.target,
    )
    return (x_train, y_train), (x_test, y_test)


class Source:
    """An unbatched data set of ``(image uint8 (h, w, c), label int64 ())``.

    Attributes:
        dataset: ``tf.data.Dataset`` of decoded examples.
        num_classes: int. Number of classes.
        num_examples: int or None. Number of examples when known.
        class_names: list of str or None.
    """

    def __init__(self, dataset, num_classes, num_examples=None, class_names=None):
        self.dataset = dataset
        self.num_classes = int(num_classes)
        self.num_examples = num_examples
        self.class_names = class_names


def open_source(spec, split="train", data_dir=None, download=False, channels=3):
    """Opens a data source by its spec string (see the module docstring).

    Args:
        spec: str. ``"digits[:SPLIT]"``, ``"tfds:NAME[:SPLIT]"``, a
            class-folder directory, or TFRecord file(s).
        split: str. The split when the spec names none (digits: ``"train"``
            or ``"test"``; tfds: any split, slices like ``"train[:98%]"``
            included); ignored by folders and TFRecords.
        data_dir: str or None. tfds data directory.
        download: bool. Let tfds download and prepare a missing data set.
        channels: int. Channels to decode images to (1 or 3).

    Returns:
        ``Source``.

    Raises:
        FileNotFoundError: if a folder, file or prepared tfds data set is missing.
        ValueError: for an unknown spec or split.
    """
    spec = str(spec)
    kind, _, rest = spec.partition(":")
    if kind == "digits":
        return _digits_source(rest or split)
    if kind == "tfds":
        name, _, tfds_split = rest.partition(":")
        return _tfds_source(name, tfds_split or split, data_dir, download, channels)
    matches = sorted(tf.io.gfile.glob(spec)) if any(c in spec for c in "*?[") else []
    if matches or spec.endswith((".tfrecord", ".tfrec")) or _is_tfrecord_dir(spec):
        return _tfrecord_source(matches or spec, channels)
    if os.path.isdir(spec):
        return _folder_source(spec, channels)
    if not os.path.exists(spec):
        raise FileNotFoundError(
            f"Data source {spec!r} not found: expected 'digits', 'tfds:NAME[:SPLIT]', "
            "a directory of class subfolders or TFRecord file(s)."
        )
    raise ValueError(
        f"Unknown data source {spec!r}: expected 'digits', 'tfds:NAME[:SPLIT]', "
        "a directory of class subfolders or TFRecord files (*.tfrecord)."
    )


def _digits_source(split):
    if split not in ("train", "test"):
        raise ValueError(f"Digits split must be 'train' or 'test', got {split!r}.")
    (x_train, y_train), (x_test, y_test) = load_digits()
    images, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    return Source(dataset, 10, len(labels), [str(i) for i in range(10)])


def _convert_channels(image, channels):
    """uint8 image with 1 or 3 channels -> ``channels`` channels."""
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 3 and channels == 1:
        return tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))), tf.uint8)
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    raise ValueError(f"Cannot convert images with {have} channels to {channels}.")


def _tfds_source(name, split, data_dir, download, channels):
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    try:
        dataset = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    except AssertionError as err:  # tfds' "could not find data" when not prepared
        raise FileNotFoundError(
            f"tfds data set {name!r} is not prepared in {builder.data_path}: pass "
            "data_dir=DIR of a prepared copy, or download=true to let tfds fetch it. "
            f"({err})"
        ) from None
    label = builder.info.features[builder.info.supervised_keys[1]]
    dataset = dataset.map(
        lambda image, y: (_convert_channels(image, channels), tf.cast(y, tf.int64)),
        num_parallel_calls=AUTOTUNE,
    )
    try:
        num_examples = builder.info.splits[split].num_examples
    except KeyError:  # no recorded split sizes (e.g. tfds.testing.mock_data)
        num_examples = int(dataset.reduce(0, lambda n, _: n + 1))
    return Source(dataset, label.num_classes, num_examples, label.names)


def class_folders(directory):
    """Sorted names of the class subfolders of ``directory`` (hidden ones skipped)."""
    return sorted(
        entry.name
        for entry in os.scandir(directory)
        if entry.is_dir() and not entry.name.startswith(".")
    )


def _folder_source(directory, channels):
    class_names = class_folders(directory)
    paths, labels = [], []
    for label, class_name in enumerate(class_names):
        folder = os.path.join(directory, class_name)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        paths += [os.path.join(folder, f) for f in files]
        labels += [label] * len(files)
    if not paths:
        raise ValueError(
            f"No images in {directory!r}: expected one subfolder per class holding "
            f"{'/'.join(IMAGE_EXTENSIONS)} files."
        )
    # One fixed shuffle of the file list, so that shuffle buffers smaller than the
    # data set and the dev split see every class (the listing is class by class).
    order = np.random.default_rng(0).permutation(len(paths))
    paths, labels = np.array(paths)[order], np.array(labels, "int64")[order]
    dataset = tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        lambda path, label: (decode_image(tf.io.read_file(path), channels), label),
        num_parallel_calls=AUTOTUNE,
    )
    return Source(dataset, len(class_names), len(paths), class_names)


def _is_tfrecord_dir(path):
    return os.path.isdir(path) and bool(tf.io.gfile.glob(os.path.join(path, "*.tfrecord")))


def _tfrecord_source(files, channels):
    if isinstance(files, str):
        files = (
            sorted(tf.io.gfile.glob(os.path.join(files, "*.tfrecord")))
            if os.path.isdir(files)
            else [files]
        )
    missing = [f for f in files if not tf.io.gfile.exists(f)]
    if missing:
        raise FileNotFoundError(f"TFRecord file(s) not found: {missing}")
    records = tf.data.TFRecordDataset(files, num_parallel_reads=AUTOTUNE)
    # One cheap pass over the labels gives the example and class counts.
    labels = records.map(
        lambda r: tf.io.parse_single_example(r, {"label": TFRECORD_FEATURES["label"]})["label"]
    )
    count, top = labels.reduce((tf.constant(0, tf.int64), tf.constant(-1, tf.int64)),
                               lambda acc, y: (acc[0] + 1, tf.maximum(acc[1], y)))
    dataset = records.map(
        lambda r: _parse_example(r, channels), num_parallel_calls=AUTOTUNE
    )
    return Source(dataset, int(top) + 1, int(count))


def _parse_example(record, channels):
    example = tf.io.parse_single_example(record, TFRECORD_FEATURES)
    return decode_image(example["image"], channels), example["label"]


def write_tfrecord(images, labels, path):
    """Writes images as PNG-encoded ``tf.train.Example`` records (atomically).

    Args:
        images: uint8 array ``(n, height, width, channels)``.
        labels: int array ``(n,)``.
        path: str. Output ``.tfrecord`` file.
    """
    with atomic_path(path, ".tfrecord") as partial, tf.io.TFRecordWriter(partial) as writer:
        for image, label in zip(images, labels):
            feature = {
                "image": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[tf.io.encode_png(image).numpy()])
                ),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
            }
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )


def split_dev(source, percent):
    """Holds out ``percent`` % of a source, spread evenly, as a dev set.

    Example ``i`` goes to dev when ``floor((i + 1) p / 100) > floor(i p / 100)``,
    so exactly ``floor(n p / 100)`` examples are held out, in every stretch of
    the source alike.

    Args:
        source: ``Source`` with a known ``num_examples``.
        percent: float in (0, 100).

    Returns:
        ``(train Source, dev Source)``.
    """
    if not 0 < percent < 100:
        raise ValueError(f"dev_percent must be in (0, 100), got {percent!r}.")
    p = tf.constant(percent, tf.float64)

    def is_dev(index, _):
        i = tf.cast(index, tf.float64)  # multiply before dividing: exact for integer p
        return tf.floor((i + 1) * p / 100) > tf.floor(i * p / 100)

    indexed = source.dataset.enumerate()
    unindex = lambda _, example: example  # noqa: E731
    dev = indexed.filter(is_dev).map(unindex)
    train = indexed.filter(lambda i, e: tf.logical_not(is_dev(i, e))).map(unindex)
    n_dev = int(source.num_examples * percent // 100)
    return (
        Source(train, source.num_classes, source.num_examples - n_dev, source.class_names),
        Source(dev, source.num_classes, n_dev, source.class_names),
    )
