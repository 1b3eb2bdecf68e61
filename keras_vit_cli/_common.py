"""What the commands share: option types, the model options and model loading, labels files.

Nothing here imports ``keras_vit`` (nor TensorFlow) at module level, so that
building the parser, ``--help`` and argument errors stay instant; the
choices below are the library's own, checked equal by the tests.
"""

from __future__ import annotations

import argparse
import os

# The library's choices (keras_vit.model.posemb, keras_vit.model.vit,
# keras_vit.export, keras_vit.train.strategies): tests/cli/test_cli.py checks
# that they agree.
POSEMB_INTERPOLATIONS = ("official", "bilinear", "bicubic", "bicubic_hf")
SEMANTICS = ("timm", "official")
EXPORT_FORMATS = ("saved_model", "tflite", "onnx", "openvino")
OPENVINO_PRECISIONS = ("f32", "bf16", "f16")
MAX_IMAGE_PIXELS = 4096 * 4096
QUANTIZATIONS = ("float16", "dynamic", "int8")
STRATEGIES = ("auto", "cpu", "mirrored", "multiworker", "tpu")
NPZ_LAYOUTS = ("vit_jax", "big_vision")


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _number_type(accepts, expected):
    """argparse type of a finite number that ``accepts``; ``expected`` names it in the error."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (value == value and abs(value) != float("inf") and accepts(value)):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


#: argparse type: a finite number > 0.
positive_float = _number_type(lambda value: value > 0, "a positive number")
#: argparse type: a number strictly between 0 and 1.
fraction = _number_type(lambda value: 0.0 < value < 1.0, "a number between 0 and 1")


def comma_list(choices):
    """argparse type: a comma-separated list of some of ``choices``."""

    def parse(text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(choices)}; got {text!r}"
            )
        return items

    return parse


def image_size(text):
    """argparse type: ``SIZE`` or ``HEIGHTxWIDTH`` -> ``(height, width)``."""
    parts = text.lower().split("x")
    try:
        size = tuple(positive_int(part) for part in parts)
    except argparse.ArgumentTypeError:
        size = ()
    if len(size) not in (1, 2):
        raise argparse.ArgumentTypeError(
            f"expected SIZE or HEIGHTxWIDTH in pixels (384, 384x288), got {text!r}"
        )
    return (size[0], size[-1])


def add_image_size_argument(parser, help_text):
    """Adds ``--image-size SIZE`` / ``--image-size HEIGHTxWIDTH`` (the same in every command)."""
    parser.add_argument(
        "--image-size",
        type=image_size,
        default=None,
        metavar="SIZE",
        help=f"{help_text} SIZE or HEIGHTxWIDTH (384, 384x288).",
    )


def add_model_source_arguments(parser):
    """Adds ``--model``, ``--weights`` and ``--num-classes``."""
    parser.add_argument(
        "--model",
        required=True,
        help="Factory name (ViT_B16), variant ('B/16', 'R50+B/16') or a .keras file.",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="Weights of a factory/variant: a file, folder, registry name or URL.",
    )
    parser.add_argument(
        "--num-classes",
        type=positive_int,
        default=None,
        help="Classes of the head (default: the checkpoint's, or 1000).",
    )


def add_model_arguments(parser):
    """Adds ``--model``, ``--weights``, ``--num-classes`` and the model's ``--image-size``."""
    add_model_source_arguments(parser)
    add_image_size_argument(
        parser,
        "Input size of a factory/variant (default 224, or the checkpoint's; position "
        "embeddings are resized on load) or of a dynamic_resolution .keras model:",
    )


def load_model(spec, weights=None, num_classes=None, image_size=None):
    """A ``ViT`` from a factory name, a variant string or a ``.keras`` file.

    Args:
        spec: str. ``"ViT_B16"``, ``"B/16"`` or a path to a ``.keras`` file
            (loaded in safe mode).
        weights: optional weights, passed to ``ViT.from_variant`` (or
            loaded into the ``.keras`` model with ``load_weights``).
        num_classes: optional int. Head size of a factory/variant.
        image_size: optional ``(height, width)``. Input size of a factory/variant.

    Returns:
        A built ``keras_vit.ViT``.

    Raises:
        FileNotFoundError: for a missing ``.keras`` file.
        ValueError: for an unknown name, or a file that is not a ``ViT``.
    """
    import keras

    import keras_vit

    spec = str(spec)
    if spec.endswith(".keras"):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"Model file not found: {spec}")
        model = keras.saving.load_model(spec, safe_mode=True)
        if not isinstance(model, keras_vit.ViT):
            raise ValueError(f"{spec} holds a {type(model).__name__}, not a keras_vit.ViT.")
        if num_classes is not None or (image_size is not None and not model.dynamic_resolution):
            raise ValueError(
                "--num-classes and --image-size apply to a factory or variant "
                f"(--image-size also to a dynamic_resolution model); the .keras "
                f"file {spec} fixes them."
            )
        if weights is not None:
            keras_vit.load_weights(model, weights)
        return model
    options = {"weights": weights, "num_classes": num_classes, "image_size": image_size}
    options = {key: value for key, value in options.items() if value is not None}
    if spec in keras_vit.FACTORIES:
        return keras_vit.FACTORIES[spec](**options)
    if spec in keras_vit.VARIANTS:
        return keras_vit.ViT.from_variant(spec, **options)
    raise ValueError(
        f"Unknown model {spec!r}: expected a .keras file, a factory "
        f"({', '.join(keras_vit.FACTORIES)}) or a variant ({', '.join(keras_vit.VARIANTS)})."
    )


def input_size(model, image_size=None):
    """``(height, width)`` to feed: ``image_size`` for a ``dynamic_resolution``
    model when given, else the model's own size."""
    if image_size is not None and model.dynamic_resolution:
        return tuple(image_size)
    return tuple(model.image_size)


def read_labels(path):
    """Class names from a text file, one per line (blank lines skipped)."""
    with open(path, encoding="utf-8") as file:
        return [line.strip() for line in file if line.strip()]


def add_override_argument(parser):
    """Adds ``--set KEY=VALUE ...`` (recipe overrides) to a command's parser."""
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="Override recipe keys; values are YAML (epochs=3, data=DIR, weights=PATH, "
        "model.hidden_size=32, mixed_precision=true, jit_compile=false).",
    )
