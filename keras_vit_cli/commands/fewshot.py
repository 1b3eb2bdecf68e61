"""``keras-vit fewshot``: few-shot linear evaluation of frozen ViT features."""

from __future__ import annotations

import os

from keras_vit_cli._common import (
    add_model_arguments,
    fraction,
    input_size,
    load_model,
    positive_float,
    positive_int,
)

NAME = "fewshot"
HELP = "Few-shot linear evaluation (closed-form least squares) of frozen features."


def _shot_list(text):
    """argparse type: comma-separated positive integers (``"1,5,10,25"``)."""
    return [positive_int(item) for item in text.split(",")]


def add_arguments(parser):
    add_model_arguments(parser)
    parser.add_argument(
        "--data",
        required=True,
        help="Data source: 'digits', tfds:NAME (with --data-dir), a prepared tfds folder, "
        "an image folder (class subfolders, or train/ and test/ of them) or TFRecords.",
    )
    parser.add_argument("--data-dir", default=None, help="tfds data directory.")
    parser.add_argument(
        "--shots",
        type=_shot_list,
        default=None,
        help="Training examples per class, comma-separated (default 1,5,10,25).",
    )
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=None,
        help="Draws of the training examples per shot count (default 3).",
    )
    parser.add_argument(
        "--l2-reg",
        type=positive_float,
        default=None,
        help="L2 regularisation of the least-squares probe (default 2^10).",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--train-split", default="train", help="Training split.")
    parser.add_argument("--test-split", default="test", help="Test split.")
    parser.add_argument(
        "--test-fraction",
        type=fraction,
        default=0.5,
        help="Held-out share per class of a source without splits (default 0.5).",
    )
    parser.add_argument("--output", default=None, help="Folder for fewshot.json and fewshot.png.")


def run(args):
    if args.output:  # the figure needs matplotlib: checked, and the folder made, before any work
        from keras_vit.extras import check

        check(("matplotlib", "inspect", "keras-vit fewshot --output (its figure)"))
        os.makedirs(args.output, exist_ok=True)
    from keras_vit.analysis import fewshot, plots
    from keras_vit.atomic import write_json_atomic
    from keras_vit.data import named_decode_errors

    args.shots = args.shots or list(fewshot.DEFAULT_SHOTS)
    args.seeds = args.seeds or fewshot.DEFAULT_NUM_SEEDS
    args.l2_reg = args.l2_reg or fewshot.DEFAULT_L2_REG
    image_size = args.image_size
    model = load_model(args.model, args.weights, args.num_classes, image_size)
    train, test, class_names = fewshot.load_fewshot_data(
        args.data,
        input_size(model, image_size),
        model.channels,
        args.batch_size,
        args.train_split,
        args.test_split,
        args.test_fraction,
        data_dir=args.data_dir,
    )
    with named_decode_errors():  # a damaged image: one sentence naming its file
        train_x, train_y = fewshot.extract_features(model, train, description="train batch")
        test_x, test_y = fewshot.extract_features(model, test, description="test batch")
    results = fewshot.fewshot_evaluate(
        train_x,
        train_y,
        test_x,
        test_y,
        args.shots,
        args.seeds,
        args.l2_reg,
        num_classes=len(class_names),
    )
    print(
        f"{model.name} on {args.data}: {len(class_names)} classes, "
        f"{len(train_y)} train / {len(test_y)} test images, features {train_x.shape[1]}, "
        f"l2 {args.l2_reg:g}, {args.seeds} seed(s)"
    )
    for shots, result in results.items():
        mean, std = 100 * result["mean"], 100 * result["std"]
        print(f"{shots:>4}-shot accuracy: {mean:6.2f}% +- {std:.2f}")
    if args.output:
        summary = {
            "model": model.name,
            "data": args.data,
            "classes": len(class_names),
            "l2_reg": args.l2_reg,
            "results": {str(k): v for k, v in results.items()},
        }
        write_json_atomic(summary, os.path.join(args.output, "fewshot.json"))
        plots.save_fewshot_plot(
            results,
            os.path.join(args.output, "fewshot.png"),
            f"{model.name}: few-shot linear accuracy on {os.path.basename(args.data.rstrip('/'))}",
            len(class_names),
        )
    return 0
