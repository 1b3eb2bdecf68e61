"""``keras-vit train RECIPE --set key=value ...``: run a training recipe."""

from __future__ import annotations

from keras_vit_cli._common import STRATEGIES, add_override_argument

NAME = "train"
HELP = (
    "Train, fine-tune or pre-train (task: mpp) a ViT with a recipe from pipelines/ "
    "(or any recipe YAML); an interrupted run resumes when run again."
)


def add_arguments(parser):
    parser.add_argument(
        "recipe", help="Recipe name in pipelines/ (e.g. cifar10_finetune) or a YAML file."
    )
    add_override_argument(parser)
    parser.add_argument("--output", help="Run directory (default: runs/<recipe name>).")
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="Distribution strategy (default: the recipe's, usually auto).",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="Start over: delete the run's backup instead of resuming from it.",
    )
    parser.add_argument(
        "--print-recipe", action="store_true", help="Print the resolved recipe and exit."
    )


def run(args):
    from keras_vit.train.recipe import load_recipe

    overrides = list(args.overrides)
    if args.output:
        overrides.append(f"output={args.output}")
    if args.strategy:
        overrides.append(f"strategy={args.strategy}")
    recipe = load_recipe(args.recipe, overrides)
    if args.print_recipe:
        import yaml

        print(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        return 0

    from keras_vit.train.loop import train

    metrics = train(recipe, fresh=args.fresh)
    steps = f"after {metrics['steps']} steps ({metrics['train_seconds']:.0f} s)"
    if recipe.task == "mpp":
        accuracy = metrics["test_accuracy"]
        shown = "" if accuracy is None else f"masked-patch accuracy {accuracy:.4f}, "
        files = metrics["files"]
        print(f"{recipe.name}: eval {shown}loss {metrics['test_loss']:.4f} {steps}.")
        print(f"Pre-trained backbone: {files['backbone_npz'] or files['backbone_keras']}")
    else:
        print(f"{recipe.name}: eval accuracy {metrics['test_accuracy']:.4f} {steps}.")
    return 0
