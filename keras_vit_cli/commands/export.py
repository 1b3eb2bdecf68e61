"""``keras-vit export``: SavedModel (TF Serving), TFLite and ONNX, checked.

    keras-vit export --model ViT_B16 --weights ckpt.npz --num-classes 10 \\
        --image-size 384 --posemb-interpolation official \\
        --format saved_model,tflite,onnx --output exports

writes ``exports/vit_b16/<version>/`` and prints the parity table of every
artifact against the Keras model; the exit code is 1 beyond tolerance (and
nothing is written then).
"""

from __future__ import annotations

import numpy as np

NAME = "export"
HELP = "Export a ViT to SavedModel (TF Serving), TFLite and ONNX, with a parity check."


def _comma_list(text):
    return [item.strip() for item in text.split(",") if item.strip()]


def add_arguments(parser):
    from keras_vit.model.posemb import POSEMB_INTERPOLATIONS

    parser.add_argument(
        "--model", required=True,
        help="Factory name (ViT_B16), variant ('B/16') or a .keras file.",
    )
    parser.add_argument("--weights", default=None, help="Weights of a factory/variant (any format).")
    parser.add_argument("--num-classes", type=int, default=None, help="Classes of the head.")
    parser.add_argument(
        "--image-size", type=int, nargs="+", default=None, metavar="SIZE",
        help="Export size: SIZE or HEIGHT WIDTH (default: the model's). The "
        "position embeddings are resized once.",
    )
    parser.add_argument(
        "--posemb-interpolation", choices=POSEMB_INTERPOLATIONS, default=None,
        help="Resize method of the position embeddings (default: the model's).",
    )
    parser.add_argument(
        "--format", type=_comma_list, default=["saved_model"],
        help="Comma-separated: saved_model,tflite,onnx (default saved_model).",
    )
    parser.add_argument("--output", required=True, help="Base folder: OUTPUT/<model-name>/<version>/.")
    parser.add_argument(
        "--model-name", default=None, help="Folder / TF Serving name (default: the model's name)."
    )
    parser.add_argument("--version", type=int, default=None, help="Version number (default: next free).")
    parser.add_argument(
        "--dynamic-resolution", action="store_true",
        help="SavedModel, TFLite and ONNX take any height/width the patch size "
        "divides (position embeddings resized in the graph).",
    )
    parser.add_argument(
        "--quantize", type=_comma_list, default=[],
        help="Extra TFLite files, comma-separated: float16,dynamic,int8.",
    )
    parser.add_argument(
        "--representative-data", default=None,
        help="Calibration images for int8 (also parity samples): a folder of "
        "images, or 'digits' (the built-in data).",
    )
    parser.add_argument(
        "--calibration-images", type=int, default=200,
        help="At most this many representative images (default 200).",
    )
    parser.add_argument("--labels", default=None, help="Text file with one class name per line.")
    parser.add_argument("--top-k", type=int, default=5, help="Classes in the top-k outputs.")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (<= 18).")


def read_labels(path):
    """Class names from a text file, one per line (blank lines skipped)."""
    with open(path, encoding="utf-8") as file:
        return [line.strip() for line in file if line.strip()]


def representative_images(source, image_size, channels, limit):
    """Calibration images ``(n, H, W, C)`` in [0, 255] from a folder or ``"digits"``.

    Raises:
        FileNotFoundError: for a missing folder.
        ValueError: for a folder without images.
    """
    import os

    import tensorflow as tf

    from keras_vit.data import IMAGE_EXTENSIONS
    from keras_vit.analysis.fewshot import find_images
    from keras_vit.data.images import load_image

    if source == "digits":
        from keras_vit.data import load_digits

        (images, _), _ = load_digits()
        images = tf.image.resize(images[:limit].astype("float32"), image_size, antialias=True)
        if channels == 3:
            images = tf.image.grayscale_to_rgb(images)
        return np.clip(images.numpy(), 0.0, 255.0)
    if not os.path.isdir(source):
        raise FileNotFoundError(f"Representative data folder not found: {source}")
    paths = find_images(source)[:limit]
    if not paths:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {source}.")
    return np.stack([load_image(path, image_size, channels) for path in paths])


def export_quickstart(run_dir):
    """Exports a quickstart run's model and classifies a held-out digit with it.

    ``<run_dir>/model.keras`` becomes the SavedModel
    ``<run_dir>/export/digits/<version>/`` (labels "0".."9"); the first
    held-out digit is written to ``<run_dir>/digit.png`` and sent through
    the SavedModel's ``serve_bytes`` signature.

    Returns:
        ``(ExportResult, true digit, predicted digit)``.
    """
    import os

    import keras
    import tensorflow as tf

    from keras_vit.data import load_digits
    from keras_vit.export.exporter import export_model

    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"), safe_mode=True)
    _, (x_test, y_test) = load_digits()
    result = export_model(
        model, os.path.join(run_dir, "export"), ["saved_model"], model_name="digits",
        labels=[str(digit) for digit in range(10)], samples=x_test[:32],
    )
    png = tf.io.encode_png(x_test[0]).numpy()
    with open(os.path.join(run_dir, "digit.png"), "wb") as file:
        file.write(png)
    serve_bytes = tf.saved_model.load(result.path).signatures["serve_bytes"]
    out = serve_bytes(image_bytes=tf.constant([png]))
    predicted = int(out["top_k_labels"][0, 0].numpy())
    probability = float(out["top_k_probabilities"][0, 0])
    print(
        f"SavedModel {result.path}: {run_dir}/digit.png (a held-out {y_test[0]}) "
        f"is predicted {predicted} (p={probability:.2f})."
    )
    return result, int(y_test[0]), predicted


def run(args):
    from keras_vit_cli.commands.inspect_model import load_model
    from keras_vit.export.exporter import ExportParityError, export_model
    from keras_vit.model.layers import _pair

    model = load_model(args.model, args.weights, args.num_classes)
    image_size = model.image_size
    if args.image_size is not None:
        if len(args.image_size) > 2:
            raise ValueError(f"--image-size takes SIZE or HEIGHT WIDTH; got {args.image_size}.")
        image_size = _pair((args.image_size[0], args.image_size[-1]), "image_size")
    if "int8" in args.quantize and args.representative_data is None:
        raise ValueError(
            "--quantize int8 needs --representative-data (a folder of images, or "
            "'digits' for models trained on the built-in data)."
        )
    calibration = None
    if args.representative_data is not None:
        calibration = representative_images(
            args.representative_data, image_size, model.channels, args.calibration_images
        )
    try:
        result = export_model(
            model,
            args.output,
            args.format,
            model_name=args.model_name,
            version=args.version,
            image_size=image_size,
            posemb_interpolation=args.posemb_interpolation,
            dynamic_resolution=args.dynamic_resolution,
            quantize=args.quantize,
            labels=None if args.labels is None else read_labels(args.labels),
            representative_images=calibration,
            top_k=args.top_k,
            opset=args.opset,
        )
    except ExportParityError as err:
        print(f"keras-vit export: {err}")
        return 1
    print(f"Exported version {result.version} to {result.path}:")
    for name, path in result.artifacts.items():
        print(f"  {name:<16}{path}")
    return 0
