"""Images in: sources (``digits``, tfds, image folders, TFRecords), streams, preprocessing."""

from keras_vit.data.images import decode_image, load_image, preprocess_input
from keras_vit.data.sources import (
    IMAGE_EXTENSIONS,
    Source,
    class_folders,
    load_digits,
    named_decode_errors,
    open_source,
    split_dev,
    write_tfrecord,
)
from keras_vit.data.streams import AUGMENT_DEFAULTS, eval_stream, train_stream

__all__ = [
    "AUGMENT_DEFAULTS",
    "IMAGE_EXTENSIONS",
    "Source",
    "class_folders",
    "decode_image",
    "eval_stream",
    "load_digits",
    "load_image",
    "named_decode_errors",
    "open_source",
    "preprocess_input",
    "split_dev",
    "train_stream",
    "write_tfrecord",
]
