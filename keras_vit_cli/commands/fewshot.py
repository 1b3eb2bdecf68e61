"""``keras-vit fewshot``: few-shot linear evaluation of frozen ViT features."""

from __future__ import annotations

import os

from keras_vit.atomic import write_json_atomic
from keras_vit_cli.commands.inspect_model import (
    add_model_arguments,
    input_size,
    load_model,
    positive_int,
)

NAME = "fewshot"
HELP = "Few-shot linear evaluation (closed-form least squares) of frozen features."


def _shot_list(text):
    """argparse type: comma-separated positive integers (``"1,5,10,25"``)."""
    return [positive_int(item) for item in text.split(",")]


def add_arguments(parser):
    from keras_vit.analysis import fewshot

    add_model_arguments(parser)
    parser.add_argument(
        "--data", required=True,
        help="'digits', an image folder (class subfolders, or train/ and test/ of "
        "them) or a prepared tfds data set folder.",
    )
    parser.add_argument(
        "--shots", type=_shot_list, default=list(fewshot.DEFAULT_SHOTS),
        help="Training examples per class, comma-separated (default 1,5,10,25).",
    )
    parser.add_argument(
        "--seeds", type=positive_int, default=fewshot.DEFAULT_NUM_SEEDS,
        help="Draws of the training examples per shot count (default 3).",
    )
    parser.add_argument(
        "--l2-reg", type=float, default=fewshot.DEFAULT_L2_REG,
        help="L2 regularisation of the least-squares probe (default 2^10).",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--train-split", default="train", help="tfds training split.")
    parser.add_argument("--test-split", default="test", help="tfds test split.")
    parser.add_argument(
        "--test-fraction", type=float, default=0.5,
        help="Held-out share per class of a folder without train/test (default 0.5).",
    )
    parser.add_argument("--output", default=None, help="Folder for fewshot.json and fewshot.png.")


def run(args):
    from keras_vit.analysis import fewshot

    model = load_model(args.model, args.weights, args.num_classes, args.image_size)
    train, test, class_names = fewshot.load_fewshot_data(
        args.data, input_size(model, args.image_size), model.channels, args.batch_size,
        args.train_split, args.test_split, args.test_fraction,
    )
    train_x, train_y = fewshot.extract_features(model, train, description="train batch")
    test_x, test_y = fewshot.extract_features(model, test, description="test batch")
    results = fewshot.fewshot_evaluate(
        train_x, train_y, test_x, test_y, args.shots, args.seeds, args.l2_reg,
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
        fewshot.save_fewshot_plot(
            results, os.path.join(args.output, "fewshot.png"),
            f"{model.name}: few-shot linear accuracy on {os.path.basename(args.data.rstrip('/'))}",
            len(class_names),
        )
    return 0
