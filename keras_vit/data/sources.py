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

Bad data is found early, by name: a listed image folder has every file's
first bytes checked (JPEG/PNG/GIF/BMP), TFRecords have every label and
image header checked in the one pass that counts them (labels must lie in
``[0, num_classes)``), and an image that still fails to decode mid-stream
stops the stream with an error naming its file (or record), instead of
TensorFlow's message without one. Hidden files and folders (``.*``, such as
macOS ``._photo.jpg``) are not listed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re

import numpy as np
import tensorflow as tf

from keras_vit.atomic import atomic_path
from keras_vit.data.images import (
    IMAGE_SIGNATURES,
    LISTED_FILES,
    check_image_files,
    convert_channels,
    decode_image,
    describe_header,
    fit_image,
    image_format,
)
from keras_vit.extras import require
from keras_vit.validation import integer

AUTOTUNE = tf.data.AUTOTUNE
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val", "validation")}
#: Records hold ``image`` (encoded bytes) and ``label`` (int64); files without any
#: ``label`` are an unlabeled source (every label 0).
TFRECORD_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64, default_value=0),
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


def open_source(spec, split="train", data_dir=None, download=False, channels=3, num_classes=None):
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
        num_classes: int or None. Classes of the model the data is for: a
            TFRecord label outside ``[0, num_classes)``, or a source with more
            classes, is refused. None: TFRecord labels must be >= 0 and the
            class count is the largest label + 1.

    Returns:
        ``Source`` (``num_classes`` is the one given, when given).

    Raises:
        FileNotFoundError: if a folder, file or prepared tfds data set is missing.
        ValueError: for an unknown spec or split, a folder without images, a
            file that is not an image, a record with a bad label or image.
        keras_vit.extras.MissingExtraError: for ``tfds:`` data without
            tensorflow_datasets (the message names the install command).
    """
    spec = os.fspath(spec)
    if num_classes is not None:
        num_classes = integer(num_classes, "num_classes", 1)
    source = _open(spec, split, data_dir, download, channels, num_classes)
    if num_classes is not None and source.labelled:
        if source.num_classes > num_classes:
            raise ValueError(
                f"{spec} has {source.num_classes} classes; the model has {num_classes}."
            )
        source.num_classes = num_classes
    return source


def _open(spec, split, data_dir, download, channels, num_classes):
    kind, _, rest = spec.partition(":")
    if kind == "digits":
        return _digits_source(rest or split)
    if kind == "tfds":
        name, _, tfds_split = rest.partition(":")
        return _tfds_source(name, tfds_split or split, data_dir, download, channels)
    matches = sorted(tf.io.gfile.glob(spec)) if any(c in spec for c in "*?[") else []
    if matches or spec.endswith((".tfrecord", ".tfrec")) or _is_tfrecord_dir(spec):
        return _tfrecord_source(matches or spec, channels, num_classes)
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
    num_classes=None,
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
        num_classes: int or None. As ``open_source``.

    Returns:
        ``(train Source, test Source)``.
    """
    spec = os.fspath(spec)
    has_splits = spec.split(":")[0] in ("digits", "tfds") or (
        os.path.isdir(spec) and (_find_tfds_dir(spec) or _split_folder(spec, test_split))
    )
    options = dict(channels=channels, num_classes=num_classes)
    if has_splits:
        return (
            open_source(spec, train_split, data_dir, **options),
            open_source(spec, test_split, data_dir, **options),
        )
    return split_per_class(open_source(spec, **options), test_fraction, seed)


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


def _tfds():
    return require("tensorflow_datasets", "data", "tfds: data sources")


def _tfds_source(name, split, data_dir, download, channels):
    tfds = _tfds()

    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    return _tfds_builder_source(builder, split, channels)


def _tfds_folder_source(directory, split, channels):
    return _tfds_builder_source(_tfds().builder_from_directory(directory), split, channels)


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
    """Image files (``IMAGE_EXTENSIONS``) under ``folder``, recursively, sorted.

    Hidden files and folders (names starting with ``.``) are skipped.
    """
    paths = []
    for root, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        paths += [
            os.path.join(root, name)
            for name in names
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
        ]
    return sorted(paths)


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
    check_image_files(paths, directory)
    # One fixed shuffle of the file list, so that shuffle buffers smaller than the
    # data set and the dev split see every class (the listing is class by class).
    order = np.random.default_rng(0).permutation(len(paths))
    paths, labels = np.array(paths)[order], np.array(labels, "int64")[order]
    dataset = decoded_in_order(
        tf.data.Dataset.from_tensor_slices((paths, labels)),
        lambda item: (decode_image(tf.io.read_file(item[0]), channels), item[1]),
        paths,
        channels,
    )
    return Source(dataset, num_classes, len(paths), class_names, labels)


_DECODE_FAILURE = "Cannot decode "
_DECODE_ADVICE = "Remove or replace it"


@contextlib.contextmanager
def named_decode_errors():
    """Turns the stream's decode failure (``decoded_in_order``) into a one-sentence ``ValueError``.

    TensorFlow reports the failing check inside ``model.fit`` / ``evaluate``
    as an ``InvalidArgumentError`` with graph details around the sentence;
    wrap the loop that iterates a source to get ``ValueError("Cannot decode
    <file> ...")`` instead. Other errors pass unchanged.
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as err:
        found = re.search(
            rf"assertion failed: \[({_DECODE_FAILURE}.*?{_DECODE_ADVICE})\]", err.message, re.S
        )
        if found is None:
            raise
        raise ValueError(found.group(1) + ".") from None


def decoded_in_order(items, decode, names, channels):
    """``items`` decoded in parallel; a failure stops the stream naming the item.

    TensorFlow's decoders fail with a message that names no file. Here the
    failing element is dropped (``ignore_errors``), the elements keep their
    order (a deterministic map) and an index, and a check after them raises
    ``InvalidArgumentError("... Cannot decode <names[i]> ...")`` at the first
    missing index (a sentinel after the last element catches a failure there).

    Args:
        items: ``tf.data.Dataset`` of raw elements.
        decode: function of one raw element -> ``(image uint8 (h, w, c), label int64)``.
        names: sequence of str, one per element: what the message names.
        channels: int. Channels of the decoded images.

    Returns:
        ``tf.data.Dataset`` of ``(image, label)``, in the order of ``items``.
    """
    count = len(names)
    table = tf.constant(list(names))
    decoded = (
        items.enumerate()
        .map(
            lambda index, item: (index, *decode(item)),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        .ignore_errors()
    )
    sentinel = tf.data.Dataset.from_tensors(
        (
            tf.constant(count, tf.int64),
            tf.zeros([0, 0, channels], tf.uint8),
            tf.constant(-1, tf.int64),
        )
    )

    def check(expected, element):
        found = tf.debugging.Assert(
            tf.equal(element[0], expected),
            [
                tf.strings.join(
                    [
                        _DECODE_FAILURE,
                        tf.gather(table, tf.minimum(expected, count - 1)),
                        f" as a {'/'.join(IMAGE_SIGNATURES)} image: it is damaged or not an "
                        f"image. {_DECODE_ADVICE}",
                    ]
                )
            ],
        )
        with tf.control_dependencies([found]):
            return element[0] + 1, element

    return (
        decoded.concatenate(sentinel)
        .scan(tf.constant(0, tf.int64), check)
        .filter(lambda index, image, label: index < count)
        .map(lambda index, image, label: (image, label))
    )


def _is_tfrecord_dir(path):
    return os.path.isdir(path) and bool(tf.io.gfile.glob(os.path.join(path, "*.tfrecord")))


def _tfrecord_source(files, channels, num_classes=None):
    if isinstance(files, str):
        files = (
            sorted(tf.io.gfile.glob(os.path.join(files, "*.tfrecord")))
            if os.path.isdir(files)
            else [files]
        )
    missing = [f for f in files if not tf.io.gfile.exists(f)]
    if missing:
        raise FileNotFoundError(f"TFRecord file(s) not found: {missing}")
    labels, names, labelled = _checked_records(files, num_classes)
    # Read file after file, so that an element's index names its record.
    dataset = decoded_in_order(
        tf.data.TFRecordDataset(files),
        lambda record: _parse_example(record, channels),
        names,
        channels,
    )
    if not labelled:
        return Source(dataset, None, len(labels), labels=labels)
    count = num_classes or int(labels.max(initial=-1)) + 1
    return Source(dataset, count, len(labels), labels=labels)


def _checked_records(files, num_classes):
    """One pass over the records: labels, and a name per record (``"record 3 of f"``).

    Returns:
        ``(labels, names, labelled)``; without any ``label`` feature the
        labels are zeros and ``labelled`` is False.

    Raises:
        ValueError: for a file that is not a TFRecord file, records that are
            not ``tf.train.Example`` with ``image`` (and ``label``, unless no
            record has one), a label outside ``[0, num_classes)`` (>= 0
            without ``num_classes``) or an
            image whose first bytes are no JPEG/PNG/GIF/BMP; each named by
            file and record index.
    """
    labels, heads, names = [], [], []
    for path in files:
        features = {
            "label": tf.io.FixedLenFeature([], tf.int64, default_value=_NO_LABEL),
            "image": tf.io.FixedLenFeature([], tf.string, default_value=""),
        }
        records = tf.data.TFRecordDataset(path).map(
            lambda r, features=features: tf.io.parse_single_example(r, features)
        )
        try:
            for batch in records.batch(4096).as_numpy_iterator():
                labels.append(batch["label"])
                heads += [bytes(image[:8]) for image in batch["image"]]
        except tf.errors.DataLossError as err:
            raise ValueError(f"{path} is not a readable TFRecord file: {err.message}") from None
        except tf.errors.InvalidArgumentError as err:
            raise ValueError(
                f"{path}: expected tf.train.Example records with 'image' (bytes) and 'label' "
                f"(int64): {err.message}"
            ) from None
        names += [f"record {index} of {path}" for index in range(len(heads) - len(names))]
    labels = np.concatenate(labels) if labels else np.zeros([0], "int64")
    if not len(labels):
        raise ValueError(f"No records in the TFRecord file(s) {list(files)}.")
    labelled = not np.all(labels == _NO_LABEL)
    if not labelled:  # images only: an unlabeled source (self-supervised pre-training)
        labels = np.zeros_like(labels)
    limit = f"[0, {num_classes})" if num_classes else "[0, classes)"
    bad = [
        f"{names[i]} has "
        + ("no 'label'" if labels[i] == _NO_LABEL else f"label {labels[i]}, outside {limit}")
        for i in np.flatnonzero((labels < 0) | (labels >= (num_classes or np.inf)))
    ]
    bad += [
        f"{names[i]} has no 'image'"
        if not head
        else f"{names[i]}'s image is no {'/'.join(IMAGE_SIGNATURES)} ({describe_header(head)})"
        for i, head in enumerate(heads)
        if image_format(head) is None
    ]
    if bad:
        more = f", and {len(bad) - LISTED_FILES} more" if len(bad) > LISTED_FILES else ""
        raise ValueError(f"Bad records in {list(files)}: {'; '.join(bad[:LISTED_FILES])}{more}.")
    return labels, names, labelled


_NO_LABEL = np.iinfo("int64").min


def _parse_example(record, channels):
    example = tf.io.parse_single_example(record, TFRECORD_FEATURES)
    return decode_image(example["image"], channels), example["label"]


def write_tfrecord(images, labels, path):
    """Writes images as PNG-encoded ``tf.train.Example`` records (atomically).

    Args:
        images: uint8 array ``(n, height, width, channels)``, channels 1, 3 or 4.
        labels: int array ``(n,)`` of class ids >= 0.
        path: str. Output ``.tfrecord`` file.

    Raises:
        ValueError: for images or labels of another type or shape, or
            negative labels (nothing is written).
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "images must be a uint8 array (n, height, width, channels) with 1, 3 or 4 "
            f"channels; got {images.dtype} {images.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != images.shape[:1]:
        raise ValueError(
            f"labels must be {len(images)} integer class ids (one per image); got "
            f"{labels.dtype} {labels.shape}."
        )
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels must be class ids >= 0; got {labels.min()}.")
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
