"""``keras-vit predict``: top-k classes of image files with any artifact.

    keras-vit predict exports/vit_b16 cat.jpg dog.png --top-k 3

The model is a ``.keras`` file, a SavedModel (version folder or TF Serving
model folder: newest version), a ``.tflite``, an ``.onnx`` or an OpenVINO
``.xml`` file. Images are decoded and resized on the host
(``keras_vit.load_image``) to the artifact's input size.
"""

from __future__ import annotations

import textwrap

from keras_vit_cli._common import OPENVINO_PRECISIONS, positive_int, read_labels

NAME = "predict"
HELP = "Top-k classes of image files with a .keras, SavedModel, .tflite, .onnx or OpenVINO model."
#: Shown below the options of ``keras-vit predict --help``.
TRUST = (
    "Trust: a SavedModel is a program. Loading one runs its TensorFlow graph, which can "
    "read and write files (TensorFlow's security note), so run only SavedModels you "
    "trust. For models of unknown origin use a .keras file: it is loaded in Keras' "
    "safe mode, as data, without running code from the file."
)


def add_arguments(parser):
    parser.epilog = textwrap.fill(TRUST, 78)  # the formatter keeps line breaks as written
    parser.add_argument(
        "model",
        help="A .keras file, a SavedModel folder (trusted sources only, see below), "
        "a .tflite, .onnx or OpenVINO .xml file.",
    )
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE", help="Image files (JPEG, PNG, GIF, BMP)."
    )
    parser.add_argument(
        "--top-k", type=positive_int, default=5, help="Classes to print per image (default 5)."
    )
    parser.add_argument(
        "--labels",
        default=None,
        help="Text file with one class name per line (default: the labels stored at export).",
    )
    parser.add_argument(
        "--precision",
        choices=OPENVINO_PRECISIONS,
        default=None,
        help="OpenVINO .xml only: the CPU's INFERENCE_PRECISION_HINT (default: the one "
        "the export was checked with, else f32; bf16 is faster on AVX512-BF16/AMX CPUs).",
    )


def predict_files(artifact, paths, k=5, labels=None):
    """Top-k classes of image files.

    Args:
        artifact: ``keras_vit.export.artifacts.Artifact``.
        paths: list of image file paths.
        k: int. Classes per image.
        labels: optional list of class names (default ``artifact.labels``).

    Returns:
        list (one per image) of ``(class_id, label_or_None, probability)``
        lists, most probable first.
    """
    import numpy as np

    from keras_vit.data.images import load_image
    from keras_vit.export.artifacts import top_k

    images = np.stack([load_image(path, artifact.image_size, artifact.channels) for path in paths])
    return top_k(artifact(images), k, labels or artifact.labels)


def run(args):
    from keras_vit.export.artifacts import load_artifact

    artifact = load_artifact(args.model, precision=args.precision)
    labels = None if args.labels is None else read_labels(args.labels)
    for path, classes in zip(args.images, predict_files(artifact, args.images, args.top_k, labels)):
        print(path)
        for rank, (class_id, label, probability) in enumerate(classes, 1):
            name = f" {label}" if label is not None else ""
            print(f"  {rank}. class {class_id}{name}: {probability:.4f}")
    return 0
