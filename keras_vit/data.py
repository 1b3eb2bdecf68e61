"""Input data for keras-vit: sources and ``tf.data`` pipelines.

Sources (``open_source``) yield unbatched ``(image uint8 (height, width,
channels), label int64 ())`` pairs:

- ``"digits[:SPLIT]"``: scikit-learn's digits (1,797 real 8x8 grayscale scans of
  handwritten digits shipped inside the package: no download);
- ``"tfds:NAME[:SPLIT]"``: a TensorFlow Datasets data set, read from
  ``data_dir``; never downloads unless ``download=True``;
- a directory with one subfolder of images per class (sorted names);
- TFRecord files (a file, a glob or a directory of ``*.tfrecord``) of
  ``tf.train.Example`` with ``image`` (encoded bytes) and ``label`` (int64).

Pipelines (``train_pipeline``, ``eval_pipeline``) turn a source into batches
``(images float32 (batch, size, size, channels) in [-1, 1], one-hot labels
(batch, classes))`` with the ViT paper's augmentation.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from keras_vit.atomic import atomic_path
from keras_vit.preprocessing import preprocess_input

AUTOTUNE = tf.data.AUTOTUNE
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
TFRECORD_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
}

#: Augmentation settings of a training pipeline and their defaults.
AUGMENT_DEFAULTS = {
    "inception_crop": True,  # random crop of a random area fraction and aspect ratio
    "min_area": 0.05,  # smallest crop area fraction
    "flip": True,  # random horizontal flip
    "translate": 0,  # random translation by up to N pixels (zero padding), instead of the crop
    "randaugment": None,  # None or {"num_ops": 2, "factor": 0.5}
    "mixup": 0.0,  # MixUp alpha; 0 disables
    "cutmix": 0.0,  # CutMix factor; 0 disables
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


def decode_image(data, channels):
    """Encoded image bytes (JPEG/PNG/GIF/BMP tensor) -> uint8 ``(h, w, channels)``."""
    image = tf.io.decode_image(data, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return image


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


def _with_known_size(source):
    """The source's dataset with its example count declared (progress bars, epoch ends)."""
    if source.num_examples is None:
        return source.dataset
    return source.dataset.apply(tf.data.experimental.assert_cardinality(source.num_examples))


def _options(deterministic):
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    return options


def _to_model_input(images, labels, num_classes):
    """uint8/float [0, 255] batches -> ([-1, 1] float32, one-hot float32)."""
    return preprocess_input(images), tf.one_hot(labels, num_classes)


def _random_translate(image, pixels, seed):
    """Pads by ``pixels`` (zeros) and crops back at a random offset."""
    height, width = image.shape[0], image.shape[1]
    padded = tf.pad(image, [[pixels, pixels], [pixels, pixels], [0, 0]])
    return tf.image.stateless_random_crop(padded, tf.shape(image), seed=seed)[:height, :width]


def _inception_crop(image, size, min_area, seed):
    """Random area fraction in [min_area, 1] and aspect ratio in [3/4, 4/3], resized."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4]),
        seed=seed,
        area_range=(min_area, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3),
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    return tf.image.resize(crop, size, antialias=True)


def _augment_example(image, label, seed, size, augment):
    """Per-example augmentation; returns a float32 image in [0, 255]."""
    channels = image.shape[-1]
    seeds = tf.random.experimental.stateless_split(seed, 3)
    if augment["inception_crop"]:
        image = _inception_crop(image, size, augment["min_area"], seeds[0])
    else:
        image = tf.image.resize(tf.cast(image, tf.float32), size, antialias=True)
    if augment["translate"]:
        image = _random_translate(image, int(augment["translate"]), seeds[1])
    if augment["flip"]:
        image = tf.image.stateless_random_flip_left_right(image, seeds[2])
    image.set_shape((*size, channels))
    return tf.clip_by_value(image, 0.0, 255.0), label


def _batch_augmenters(augment, seed):
    """Keras layers applied per batch: RandAugment on [0, 255]; MixUp/CutMix on [-1, 1]."""
    import keras

    before, after = [], []
    if augment["randaugment"]:
        before.append(keras.layers.RandAugment(**augment["randaugment"], seed=seed))
    if augment["mixup"]:
        after.append(keras.layers.MixUp(alpha=augment["mixup"], seed=seed))
    if augment["cutmix"]:
        after.append(keras.layers.CutMix(factor=augment["cutmix"], seed=seed))
    return before, after


def train_pipeline(
    source,
    image_size,
    batch_size,
    augment=None,
    seed=0,
    cache=False,
    shuffle_buffer=10_000,
    deterministic=False,
    repeat=False,
):
    """Shuffled, augmented, batched training data.

    Args:
        source: ``Source``.
        image_size: int or (int, int). Output height and width.
        batch_size: int. Batch size (global; the strategy splits it).
        augment: dict or None. Overrides of ``AUGMENT_DEFAULTS``.
        seed: int. Seed of shuffling and augmentation.
        cache: bool. Cache decoded examples in memory.
        shuffle_buffer: int. Shuffle buffer size.
        deterministic: bool. Fixed element order despite parallel maps.
        repeat: bool. Repeat forever (for step-based training).

    Returns:
        ``tf.data.Dataset`` of ``(images (batch, h, w, c) float32 in [-1, 1],
        labels (batch, classes) float32)``; incomplete last batches dropped.

    Raises:
        ValueError: for an unknown augmentation key.
    """
    settings = _augment_settings(augment)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    dataset = _with_known_size(source)
    if cache:
        dataset = dataset.cache()
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    # One independent stateless seed per example, so parallel maps stay reproducible.
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    dataset = tf.data.Dataset.zip((dataset, seeds)).map(
        lambda example, s: _augment_example(*example, s, size, settings),
        num_parallel_calls=AUTOTUNE,
    )
    dataset = dataset.batch(batch_size, drop_remainder=True)
    before, after = _batch_augmenters(settings, seed)
    num_classes = source.num_classes

    def batch_transform(images, labels):
        for layer in before:
            images = layer(images)
        images, labels = _to_model_input(images, labels, num_classes)
        for layer in after:
            mixed = layer({"images": images, "labels": labels})
            images, labels = mixed["images"], mixed["labels"]
        return images, labels

    dataset = dataset.map(batch_transform, num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE).with_options(_options(deterministic))


def eval_pipeline(source, image_size, batch_size, cache=False):
    """Resized, batched evaluation data in a fixed order.

    Args:
        source: ``Source``.
        image_size: int or (int, int). Output height and width.
        batch_size: int. Batch size; the last batch may be smaller.
        cache: bool. Cache the resized examples in memory.

    Returns:
        ``tf.data.Dataset`` of ``(images (batch, h, w, c) float32 in [-1, 1],
        labels (batch, classes) float32)``.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    dataset = _with_known_size(source).map(
        lambda image, label: (
            tf.image.resize(tf.cast(image, tf.float32), size, antialias=True),
            label,
        ),
        num_parallel_calls=AUTOTUNE,
    )
    if cache:
        dataset = dataset.cache()
    num_classes = source.num_classes
    dataset = dataset.batch(batch_size).map(
        lambda images, labels: _to_model_input(images, labels, num_classes),
        num_parallel_calls=AUTOTUNE,
    )
    return dataset.prefetch(AUTOTUNE).with_options(_options(True))


def _augment_settings(augment):
    settings = dict(AUGMENT_DEFAULTS)
    for key, value in (augment or {}).items():
        if key not in AUGMENT_DEFAULTS:
            raise ValueError(
                f"Unknown augmentation {key!r}; expected one of {sorted(AUGMENT_DEFAULTS)}."
            )
        settings[key] = value
    return settings
