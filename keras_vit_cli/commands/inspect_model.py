"""``keras-vit inspect``: attention rollout, attention distance, position
embedding similarity and embedding filters (the paper's Figures 6 and 7).
"""

from __future__ import annotations

import os

from keras_vit_cli._common import (
    add_model_arguments,
    input_size,
    load_model,
    positive_int,
)

NAME = "inspect"
HELP = "Attention rollout maps and the paper's Figure 7 plots of a ViT."


def add_arguments(parser):
    add_model_arguments(parser)
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="Image files or folders (searched recursively) for the rollout maps.",
    )
    parser.add_argument("--output", required=True, help="Folder for the PNGs.")
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, help="Images per forward pass."
    )
    parser.add_argument(
        "--components",
        type=positive_int,
        default=28,
        help="Principal components of the embedding filters to draw.",
    )


def image_paths(items):
    """Image files named by ``items`` (files, or folders searched recursively)."""
    from keras_vit.data import IMAGE_EXTENSIONS
    from keras_vit.data.sources import find_images

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

    from keras_vit.analysis import inspection, plots
    from keras_vit.atomic import write_json_atomic
    from keras_vit.data.images import load_image, preprocess_input

    image_size = args.image_size
    model = load_model(args.model, args.weights, args.num_classes, image_size)
    paths = image_paths(args.images)
    names = _unique_names(paths)
    size = input_size(model, image_size)
    os.makedirs(os.path.join(args.output, "rollout"), exist_ok=True)
    distances = []
    progress = keras.utils.Progbar(len(paths), unit_name="image")
    for start in range(0, len(paths), args.batch_size):
        batch = paths[start : start + args.batch_size]
        images = preprocess_input(np.stack([load_image(p, size, model.channels) for p in batch]))
        attentions, grid = inspection.model_attentions(model, images)
        maps = inspection.attention_rollout(
            attentions, grid, model.num_prefix_tokens, inspection.rollout_rows(model)
        )
        distances.append(
            inspection.mean_attention_distance(
                attentions, grid, model.stride, model.num_prefix_tokens
            )
        )
        for image, heat_map, name in zip(images, maps, names[start:]):
            plots.save_rollout_overlay(
                image, heat_map, os.path.join(args.output, "rollout", f"{name}.png"), name
            )
        progress.add(len(batch))
    mean_distance = np.concatenate(distances).mean(axis=0)
    uniform = float(inspection.patch_distances(grid, model.stride).mean())
    plots.save_attention_distance_plot(
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
    plots.save_position_similarity_plot(
        inspection.position_embedding_similarity(posemb, grid, prefix),
        os.path.join(args.output, "position_embedding_similarity.png"),
        f"{model.name}: position embedding similarity ({grid[0]}x{grid[1]} grid)",
    )
    kernel, description = inspection.embedding_filters_of(model)
    components, explained = inspection.embedding_filter_components(kernel, args.components)
    plots.save_embedding_filters_plot(
        components,
        os.path.join(args.output, "embedding_filters.png"),
        explained,
        f"{model.name}: principal components of the {description}",
    )
    print(f"Wrote {len(paths)} rollout map(s) and 3 figures to {args.output}")
    return 0
