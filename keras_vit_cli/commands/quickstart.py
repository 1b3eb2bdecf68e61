"""``keras-vit quickstart``: train a small ViT on the built-in digits in minutes."""

from __future__ import annotations

from keras_vit.train.recipe import add_override_argument

NAME = "quickstart"
HELP = "Train a small ViT from scratch on the built-in digits (recipe digits_scratch)."
RECIPE = "digits_scratch"


def add_arguments(parser):
    parser.add_argument(
        "--output",
        default="./keras-vit-quickstart",
        help="Run directory for model.keras and metrics.json (default: %(default)s).",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="Epochs (default: the recipe's, 70)."
    )
    parser.add_argument("--seed", type=int, default=None, help="Random seed (default: 0).")
    add_override_argument(parser)


def run(args):
    from keras_vit.train.recipe import load_recipe
    from keras_vit.train.loop import train

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
    from keras_vit_cli.commands.export import export_quickstart

    export_quickstart(args.output)  # SavedModel + one digit predicted through it
    return 0
