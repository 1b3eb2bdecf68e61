"""Data sources: the one way keras-vit opens images (with labels, or without).

Sources (``open_source``) yield unbatched ``(image uint8 (height, width,
channels), label int64 ())`` pairs:

- ``"digits[:SPLIT]"``: scikit-learn's digits (1,797 real 8x8 grayscale scans of
  handwritten digits shipped inside the package: no download);
- ``"tfds:NAME[:SPLIT]"``: a TensorFlow Datasets data set, read from
  ``data_dir``; never downloads unless ``download=True``; or the folder of a
  prepared tfds data set (the version folder holding ``dataset_info.json``,
  or a folder with exactly one below it);
- an image folder: one subfolder per class (sorted names; images found
  recursively inside each), optionally inside split folders (``train/``,
  ``test/``, ``val/`` or ``validation/``) that the split selects; a folder
  of images without class subfolders is an unlabeled source (every label 0,
  ``num_classes`` None: for calibration and self-supervised training);
- TFRecord files (a file, a glob or a directory of ``*.tfrecord``) of
  ``tf.train.Example`` with ``image`` (encoded bytes) and ``label`` (int64).

``open_splits`` gives a training and a test source of one spec (the spec's
own splits, else a per-class split); ``keras_vit.data.streams`` turns a
source into training and evaluation batches.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import tensorflow as tf

from keras_vit.atomic import atomic_path
from keras_vit.data.images import convert_channels, decode_image, fit_image

AUTOTUNE = tf.data.AUTOTUNE
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val", "validation")}
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
        num_classes: int, or None for an unlabeled source (labels all 0).
        num_examples: int or None. Number of examples when known.
        class_names: list of str or None.
        labels: int64 array ``(num_examples,)`` of the labels in order, when
            known without reading the images (digits, folders, TFRecords).
    """

    def __init__(self, dataset, num_classes, num_examples=None, class_names=None, labels=None):
        self.dataset = dataset
        self.num_classes = None if num_classes is None else int(num_classes)
        self.num_examples = num_examples
        self.class_names = class_names
        self.labels = None if labels is None else np.asarray(labels, "int64")

    @property
    def labelled(self):
        """True unless the source is a folder of images without classes."""
        return self.num_classes is not None


def open_source(spec, split="train", data_dir=None, download=False, channels=3):
    """Opens a data source by its spec string (see the module docstring).

    Args:
        spec: str. ``"digits[:SPLIT]"``, ``"tfds:NAME[:SPLIT]"``, a prepared
            tfds folder, an image folder, or TFRecord file(s).
        split: str. The split when the spec names none (digits: ``"train"``
            or ``"test"``; tfds: any split, slices like ``"train[:98%]"``
            included; image folders with split folders: ``"train"`` or
            ``"test"``); ignored by TFRecords and folders without splits.
        data_dir: str or None. tfds data directory.
        download: bool. Let tfds download and prepare a missing data set.
        channels: int. Channels to decode images to (1 or 3).

    Returns:
        ``Source``.

    Raises:
        FileNotFoundError: if a folder, file or prepared tfds data set is missing.
        ValueError: for an unknown spec or split, or a folder without images.
    """
    spec = os.fspath(spec)
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
        tfds_dir = _find_tfds_dir(spec)
        if tfds_dir is not None:
            return _tfds_folder_source(tfds_dir, split, channels)
        return _folder_source(_split_folder(spec, split) or spec, channels)
    if not os.path.exists(spec):
        raise FileNotFoundError(
            f"Data source {spec!r} not found: expected 'digits', 'tfds:NAME[:SPLIT]', "
            "an image folder or TFRecord file(s)."
        )
    raise ValueError(
        f"Unknown data source {spec!r}: expected 'digits', 'tfds:NAME[:SPLIT]', "
        "an image folder or TFRecord files (*.tfrecord)."
    )


def open_splits(
    spec,
    train_split="train",
    test_split="test",
    data_dir=None,
    channels=3,
    test_fraction=0.5,
    seed=0,
):
    """A training and a test ``Source`` of one spec.

    The spec's own splits where it has them (digits, tfds, an image folder
    with split folders); otherwise (an image folder of class subfolders,
    TFRecords) each class is split by ``test_fraction`` with
    ``split_per_class``.

    Args:
        spec: str. As ``open_source``.
        train_split, test_split: str. Split names (tfds: any split).
        data_dir: str or None. tfds data directory.
        channels: int. Channels to decode images to.
        test_fraction: float in (0, 1). Held-out share of each class when the
            spec has no splits.
        seed: int. Seed of that split.

    Returns:
        ``(train Source, test Source)``.
    """
    spec = os.fspath(spec)
    has_splits = spec.split(":")[0] in ("digits", "tfds") or (
        os.path.isdir(spec) and (_find_tfds_dir(spec) or _split_folder(spec, test_split))
    )
    if has_splits:
        return (
            open_source(spec, train_split, data_dir, channels=channels),
            open_source(spec, test_split, data_dir, channels=channels),
        )
    return split_per_class(open_source(spec, channels=channels), test_fraction, seed)


def _digits_source(split):
    if split not in ("train", "test"):
        raise ValueError(f"Digits split must be 'train' or 'test', got {split!r}.")
    (x_train, y_train), (x_test, y_test) = load_digits()
    images, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    return Source(dataset, 10, len(labels), [str(i) for i in range(10)], labels)


def _uint8_channels(image, channels):
    """uint8 image -> ``channels`` channels, still uint8 (rounded)."""
    if image.shape[-1] == channels:
        return image
    return tf.cast(tf.round(convert_channels(tf.cast(image, tf.float32), channels)), tf.uint8)


def _tfds_source(name, split, data_dir, download, channels):
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    return _tfds_builder_source(builder, split, channels)


def _tfds_folder_source(directory, split, channels):
    import tensorflow_datasets as tfds

    return _tfds_builder_source(tfds.builder_from_directory(directory), split, channels)


def _tfds_builder_source(builder, split, channels):
    """A tfds builder's split; its supervised keys, else ``image`` and ``label``."""
    image_key, label_key = builder.info.supervised_keys or ("image", "label")
    try:
        dataset = builder.as_dataset(split=split, shuffle_files=False)
    except AssertionError as err:  # tfds' "could not find data" when not prepared
        raise FileNotFoundError(
            f"tfds data set {builder.name!r} is not prepared in {builder.data_path}: pass "
            "data_dir=DIR of a prepared copy, or download=true to let tfds fetch it. "
            f"({err})"
        ) from None
    label = builder.info.features[label_key]
    dataset = dataset.map(
        lambda example: (
            _uint8_channels(example[image_key], channels),
            tf.cast(example[label_key], tf.int64),
        ),
        num_parallel_calls=AUTOTUNE,
    )
    try:
        num_examples = builder.info.splits[split].num_examples
    except KeyError:  # no recorded split sizes (e.g. tfds.testing.mock_data)
        num_examples = int(dataset.reduce(0, lambda n, _: n + 1))
    return Source(dataset, label.num_classes, num_examples, label.names)


def _find_tfds_dir(directory):
    """The prepared tfds version folder (with ``dataset_info.json``) at or below ``directory``."""
    found = [
        os.path.dirname(p)
        for pattern in ("dataset_info.json", "*/dataset_info.json", "*/*/dataset_info.json")
        for p in glob.glob(os.path.join(glob.escape(directory), pattern))
    ]
    if len(found) > 1:
        raise ValueError(
            f"{directory} holds several prepared tfds data sets {sorted(found)}; "
            "pass the version folder of one."
        )
    return found[0] if found else None


def _split_folder(directory, split):
    """``directory/<split folder>`` for a folder with split folders, else None."""
    for name in SPLIT_FOLDERS.get(split, (split,)):
        candidate = os.path.join(directory, name)
        if os.path.isdir(candidate):
            return candidate
    return None


def find_images(folder):
    """Image files (``IMAGE_EXTENSIONS``) under ``folder``, recursively, sorted."""
    return sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )


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
        files = find_images(os.path.join(directory, class_name))
        paths += files
        labels += [label] * len(files)
    num_classes = len(class_names)
    if not class_names:  # a folder of images without classes
        paths = find_images(directory)
        labels, num_classes, class_names = [0] * len(paths), None, None
    if not paths:
        raise ValueError(
            f"No images in {directory!r}: expected {'/'.join(IMAGE_EXTENSIONS)} files, "
            "in one subfolder per class (or directly in the folder for unlabeled data)."
        )
    # One fixed shuffle of the file list, so that shuffle buffers smaller than the
    # data set and the dev split see every class (the listing is class by class).
    order = np.random.default_rng(0).permutation(len(paths))
    paths, labels = np.array(paths)[order], np.array(labels, "int64")[order]
    dataset = tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        lambda path, label: (decode_image(tf.io.read_file(path), channels), label),
        num_parallel_calls=AUTOTUNE,
    )
    return Source(dataset, num_classes, len(paths), class_names, labels)


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
    labels = np.fromiter(labels.as_numpy_iterator(), dtype="int64")
    dataset = records.map(lambda r: _parse_example(r, channels), num_parallel_calls=AUTOTUNE)
    return Source(dataset, int(labels.max(initial=-1)) + 1, len(labels), labels=labels)


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
    i = np.arange(source.num_examples, dtype="float64")  # multiply before dividing: exact
    dev = np.floor((i + 1) * percent / 100) > np.floor(i * percent / 100)
    return _subset(source, ~dev), _subset(source, dev)


def split_per_class(source, test_fraction, seed=0):
    """Holds out ``test_fraction`` of each class (at least one example) as a test source.

    Each class's examples are permuted with ``numpy.random.default_rng(seed)``
    (classes in order) and the first ``round(n * test_fraction)`` (at least
    one) go to the test source.

    Args:
        source: a labelled ``Source`` with known ``labels``.
        test_fraction: float in (0, 1).
        seed: int.

    Returns:
        ``(train Source, test Source)``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction}.")
    if source.labels is None or not source.labelled:
        raise ValueError("split_per_class needs a labelled source whose labels are known.")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(source.labels), dtype=bool)
    for cls in np.unique(source.labels):
        members = rng.permutation(np.flatnonzero(source.labels == cls))
        test[members[: max(1, int(round(len(members) * test_fraction)))]] = True
    return _subset(source, ~test), _subset(source, test)


def _subset(source, mask):
    """The examples of ``source`` where ``mask`` (bool, one per example) is true."""
    keep = tf.constant(mask)
    dataset = (
        source.dataset.enumerate()
        .filter(lambda index, _: tf.gather(keep, index))
        .map(lambda _, example: example)
    )
    labels = None if source.labels is None else source.labels[mask]
    return Source(dataset, source.num_classes, int(mask.sum()), source.class_names, labels)


def load_images(spec, image_size, channels=3, limit=None, split="train", data_dir=None):
    """The first ``limit`` images of a source, fitted to a model's input (labels dropped).

    For int8 calibration and parity samples: any spec ``open_source`` takes,
    labelled or not (a plain folder of images works).

    Args:
        spec: str. A data source.
        image_size: int or (int, int). Model input ``(height, width)``.
        channels: int. Model input channels.
        limit: int or None. At most this many images (all when None).
        split: str. The split when the spec names none.
        data_dir: str or None. tfds data directory.

    Returns:
        float32 array ``(n, height, width, channels)`` in [0, 255].
    """
    dataset = open_source(spec, split, data_dir, channels=channels).dataset
    if limit is not None:
        dataset = dataset.take(limit)
    dataset = dataset.map(lambda image, _: fit_image(image, image_size, channels))
    images = list(dataset.as_numpy_iterator())
    if not images:
        raise ValueError(f"No images in data source {spec!r}.")
    return np.stack(images)
