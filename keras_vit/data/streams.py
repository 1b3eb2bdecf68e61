"""Training and evaluation streams: a ``Source`` as batches for ``model.fit``.

``train_stream`` and ``eval_stream`` turn a source (``keras_vit.data.sources``)
into batches ``(images float32 (batch, size, size, channels) in [-1, 1],
one-hot labels (batch, classes))``, the training stream with the ViT paper's
augmentation.
"""

from __future__ import annotations

import tensorflow as tf

from keras_vit.data.images import fit_image, preprocess_input
from keras_vit.validation import pair

AUTOTUNE = tf.data.AUTOTUNE

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


def _with_known_size(source):
    """The source's dataset with its example count declared (progress bars, epoch ends)."""
    if source.num_examples is None:
        return source.dataset
    return source.dataset.apply(tf.data.experimental.assert_cardinality(source.num_examples))


def _options(deterministic):
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    return options


def _to_model_input(images, labels, num_classes=None):
    """[0, 255] batches -> [-1, 1] float32, one-hot labels (class ids without ``num_classes``)."""
    if num_classes is not None:
        labels = tf.one_hot(labels, num_classes)
    return preprocess_input(images), labels


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
    return fit_image(crop, size, crop.shape[-1])


def _augment_example(image, label, seed, size, augment):
    """Per-example augmentation; returns a float32 image in [0, 255]."""
    channels = image.shape[-1]
    seeds = tf.random.experimental.stateless_split(seed, 3)
    if augment["inception_crop"]:
        image = _inception_crop(image, size, augment["min_area"], seeds[0])
    else:
        image = fit_image(image, size, channels)
    if augment["translate"]:
        image = _random_translate(image, int(augment["translate"]), seeds[1])
    if augment["flip"]:
        image = tf.image.stateless_random_flip_left_right(image, seeds[2])
    image.set_shape((*size, channels))
    return image, label


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


def train_stream(
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
    size = pair(image_size, "image_size")
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


def eval_stream(source, image_size, batch_size, cache=False, one_hot=True):
    """Resized, batched evaluation data in a fixed order.

    Args:
        source: ``Source``.
        image_size: int or (int, int). Output height and width.
        batch_size: int. Batch size; the last batch may be smaller.
        cache: bool. Cache the resized examples in memory.
        one_hot: bool. One-hot labels ``(batch, classes)`` float32 (for
            ``model.evaluate``); else the int64 class ids ``(batch,)``.

    Returns:
        ``tf.data.Dataset`` of ``(images (batch, h, w, c) float32 in [-1, 1],
        labels)``.
    """
    size = pair(image_size, "image_size")
    dataset = _with_known_size(source).map(
        lambda image, label: (fit_image(image, size, image.shape[-1]), label),
        num_parallel_calls=AUTOTUNE,
    )
    if cache:
        dataset = dataset.cache()
    num_classes = source.num_classes if one_hot else None
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
