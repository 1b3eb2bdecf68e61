"""``keras-vit evaluate MODEL --data SOURCE``: accuracy of a saved model."""

from __future__ import annotations

import os

from keras_vit_cli._common import positive_int

NAME = "evaluate"
HELP = "Evaluate a saved .keras model on digits, tfds:NAME:SPLIT, an image folder or TFRecords."


def add_arguments(parser):
    parser.add_argument("model", help="A .keras file (e.g. runs/NAME/model.keras).")
    parser.add_argument(
        "--data",
        default="digits:test",
        help="Data source: digits[:SPLIT], tfds:NAME[:SPLIT], a class-folder directory "
        "or TFRecord file(s) (default: %(default)s).",
    )
    parser.add_argument("--split", default="test", help="Split when --data names none.")
    parser.add_argument("--data-dir", help="tfds data directory.")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--output", help="Write the metrics as JSON to this file.")


def run(args):
    if args.output:  # a folder in the way fails now, not after the evaluation
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        if os.path.isdir(args.output):
            raise IsADirectoryError(f"--output {args.output} is a folder; name a .json file.")
    from keras_vit.atomic import write_json_atomic
    from keras_vit.data import named_decode_errors
    from keras_vit.train.loop import evaluate_saved_model

    with named_decode_errors():  # a damaged image: one sentence naming its file
        metrics = evaluate_saved_model(
            args.model,
            args.data,
            split=args.split,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
        )
    print(
        f"accuracy {metrics['accuracy']:.4f}, loss {metrics['loss']:.4f} "
        f"on {metrics['num_examples']} examples of {args.data}."
    )
    if args.output:
        write_json_atomic(metrics, args.output)
    return 0
