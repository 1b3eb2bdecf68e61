"""``keras-vit inspect``: attention rollout, attention distance, position
embedding similarity and embedding filters (the paper's Figures 6 and 7).

Also holds the model options shared with ``keras-vit fewshot``
(``add_model_arguments``, ``load_model``).
"""

from __future__ import annotations

import os

from keras_vit.atomic import write_json_atomic

NAME = "inspect"
HELP = "Attention rollout maps and the paper's Figure 7 plots of a ViT."


def positive_int(text):
    """argparse type: an integer >= 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_model_arguments(parser):
    """Adds ``--model``, ``--weights``, ``--num-classes``, ``--image-size``."""
    parser.add_argument(
        "--model", required=True,
        help="Factory name (ViT_B16), variant ('B/16', 'R50+B/16') or a .keras file.",
    )
    parser.add_argument(
        "--weights", default=None,
        help="Weights file for a factory/variant (any format build_variant reads).",
    )
    parser.add_argument(
        "--num-classes", type=int, default=None,
        help="Classes of the checkpoint's head (default 1000).",
    )
    parser.add_argument(
        "--image-size", type=int, default=None,
        help="Input size for a factory/variant (default 224; position "
        "embeddings are resized on load) or a dynamic_resolution .keras model.",
    )


def load_model(spec, weights=None, num_classes=None, image_size=None):
    """A ``ViT`` from a factory name, a variant string or a ``.keras`` file.

    Args:
        spec: str. ``"ViT_B16"``, ``"B/16"`` or a path to a ``.keras`` file
            (loaded in safe mode).
        weights: optional weights path, passed to ``build_variant`` (or
            loaded into the ``.keras`` model with ``load_weights``).
        num_classes: optional int. Head size of a factory/variant.
        image_size: optional int. Input size of a factory/variant.

    Returns:
        A built ``keras_vit.ViT``.

    Raises:
        FileNotFoundError: for a missing ``.keras`` file.
        ValueError: for an unknown name, or a file that is not a ``ViT``.
    """
    import keras

    import keras_vit
    from keras_vit.model.variants import VARIANTS

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
            from keras_vit.weights import load_weights

            load_weights(model, weights)
        return model
    options = {"weights": weights, "num_classes": num_classes, "image_size": image_size}
    options = {key: value for key, value in options.items() if value is not None}
    if spec in keras_vit.FACTORIES:
        return keras_vit.FACTORIES[spec](**options)
    if spec in VARIANTS:
        return keras_vit.build_variant(spec, **options)
    raise ValueError(
        f"Unknown model {spec!r}: expected a .keras file, a factory "
        f"({', '.join(keras_vit.FACTORIES)}) or a variant ({', '.join(VARIANTS)})."
    )


def input_size(model, image_size=None):
    """``(height, width)`` to feed: ``image_size`` for a ``dynamic_resolution``
    model when given, else the model's own size."""
    if image_size is not None and model.dynamic_resolution:
        return (int(image_size), int(image_size))
    return tuple(model.image_size)


def add_arguments(parser):
    add_model_arguments(parser)
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE",
        help="Image files or folders (searched recursively) for the rollout maps.",
    )
    parser.add_argument("--output", required=True, help="Folder for the PNGs.")
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, help="Images per forward pass."
    )
    parser.add_argument(
        "--components", type=positive_int, default=28,
        help="Principal components of the embedding filters to draw.",
    )


def image_paths(items):
    """Image files named by ``items`` (files, or folders searched recursively)."""
    from keras_vit.data import IMAGE_EXTENSIONS
    from keras_vit.analysis.fewshot import find_images

    paths = []
    for item in items:
        if os.path.isdir(item):
            paths += find_images(item)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f"Image file or folder not found: {item}")
    if not paths:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {list(items)}.")
    return paths


def _unique_names(paths):
    """Output file stems: the input's stem, numbered when two collide."""
    names, seen = [], {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return names


def run(args):
    import keras
    import numpy as np

    from keras_vit.analysis import inspection
    from keras_vit.data.images import load_image, preprocess_input

    model = load_model(args.model, args.weights, args.num_classes, args.image_size)
    paths = image_paths(args.images)
    names = _unique_names(paths)
    size = input_size(model, args.image_size)
    os.makedirs(os.path.join(args.output, "rollout"), exist_ok=True)
    distances = []
    progress = keras.utils.Progbar(len(paths), unit_name="image")
    for start in range(0, len(paths), args.batch_size):
        batch = paths[start : start + args.batch_size]
        images = preprocess_input(
            np.stack([load_image(p, size, model.channels) for p in batch])
        )
        attentions, grid = inspection.model_attentions(model, images)
        maps = inspection.attention_rollout(attentions, grid, model.num_prefix_tokens)
        distances.append(inspection.mean_attention_distance(
            attentions, grid, model.stride, model.num_prefix_tokens
        ))
        for image, heat_map, name in zip(images, maps, names[start:]):
            inspection.save_rollout_overlay(
                image, heat_map, os.path.join(args.output, "rollout", f"{name}.png"), name
            )
        progress.add(len(batch))
    mean_distance = np.concatenate(distances).mean(axis=0)
    uniform = float(inspection.patch_distances(grid, model.stride).mean())
    inspection.save_attention_distance_plot(
        mean_distance,
        os.path.join(args.output, "attention_distance.png"),
        f"{model.name}: mean attention distance, {len(paths)} image(s) of "
        f"{size[0]}x{size[1]} pixels",
        uniform,
    )
    distances = {
        "pixels_per_layer_and_head": mean_distance.round(4).tolist(),
        "uniform_attention_pixels": round(uniform, 4),
        "image_size": list(size),
        "images": len(paths),
    }
    write_json_atomic(distances, os.path.join(args.output, "attention_distance.json"))
    posemb, grid, prefix = inspection.position_embedding_of(model)
    inspection.save_position_similarity_plot(
        inspection.position_embedding_similarity(posemb, grid, prefix),
        os.path.join(args.output, "position_embedding_similarity.png"),
        f"{model.name}: position embedding similarity ({grid[0]}x{grid[1]} grid)",
    )
    kernel, description = inspection.embedding_filters_of(model)
    components, explained = inspection.embedding_filter_components(kernel, args.components)
    inspection.save_embedding_filters_plot(
        components,
        os.path.join(args.output, "embedding_filters.png"),
        explained,
        f"{model.name}: principal components of the {description}",
    )
    print(f"Wrote {len(paths)} rollout map(s) and 3 figures to {args.output}")
    return 0
