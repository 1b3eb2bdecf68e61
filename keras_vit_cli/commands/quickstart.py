"""``keras-vit quickstart``: train a small ViT on the built-in digits in minutes.

Writes, under ``--output`` (default ``./keras-vit-quickstart``): ``model.keras``
and ``metrics.json`` (the run), the SavedModel ``export/digits/<version>/``
(version 1 on the first run) and ``digit.png``, a held-out digit that the
SavedModel classifies. The last line printed names the export folder.
"""

from __future__ import annotations

import os

from keras_vit_cli._common import add_override_argument, positive_int

NAME = "quickstart"
HELP = "Train a small ViT from scratch on the built-in digits (recipe digits_scratch)."
RECIPE = "digits_scratch"


def add_arguments(parser):
    parser.add_argument(
        "--output",
        default="./keras-vit-quickstart",
        help="Run directory for model.keras, metrics.json, digit.png and the SavedModel "
        "OUTPUT/export/digits/<version>/ (default: %(default)s).",
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=None, help="Epochs (default: the recipe's, 70)."
    )
    parser.add_argument("--seed", type=int, default=None, help="Random seed (default: 0).")
    add_override_argument(parser)


def run(args):
    from keras_vit.train.loop import train
    from keras_vit.train.recipe import load_recipe

    overrides = [f"output={args.output}", *args.overrides]
    if args.epochs is not None:
        overrides.append(f"epochs={args.epochs}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    metrics = train(load_recipe(RECIPE, overrides))
    print(
        f"Test accuracy: {metrics['test_accuracy']:.4f} "
        f"({metrics['train_seconds']:.0f} s of training). "
        f"Saved {args.output}/model.keras and metrics.json."
    )
    result, _, _ = export_quickstart(args.output)  # SavedModel + one digit predicted through it
    print(
        f"SavedModel for TF Serving: {os.path.join(result.path, '')} "
        f"(keras-vit predict {result.path} {os.path.join(args.output, 'digit.png')})"
    )
    return 0


def export_quickstart(run_dir):
    """Exports a quickstart run's model and classifies a held-out digit with it.

    ``<run_dir>/model.keras`` becomes the SavedModel
    ``<run_dir>/export/digits/<version>/`` (labels "0".."9"); the first
    held-out digit is written to ``<run_dir>/digit.png`` and sent through
    the SavedModel's ``serve_bytes`` signature.

    Returns:
        ``(ExportResult, true digit, predicted digit)``.
    """
    import keras
    import tensorflow as tf

    from keras_vit.atomic import write_bytes_atomic
    from keras_vit.data import load_digits
    from keras_vit.export import export_model

    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"), safe_mode=True)
    _, (x_test, y_test) = load_digits()
    result = export_model(
        model,
        os.path.join(run_dir, "export"),
        ["saved_model"],
        model_name="digits",
        labels=[str(digit) for digit in range(10)],
        samples=x_test[:32],
    )
    png = tf.io.encode_png(x_test[0]).numpy()
    write_bytes_atomic(png, os.path.join(run_dir, "digit.png"), ".png")
    serve_bytes = tf.saved_model.load(result.path).signatures["serve_bytes"]
    out = serve_bytes(image_bytes=tf.constant([png]))
    predicted = int(out["top_k_labels"][0, 0].numpy())
    probability = float(out["top_k_probabilities"][0, 0])
    print(
        f"SavedModel {result.path}: {run_dir}/digit.png (a held-out {y_test[0]}) "
        f"is predicted {predicted} (p={probability:.2f})."
    )
    return result, int(y_test[0]), predicted
