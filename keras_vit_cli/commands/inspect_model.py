"""``keras-vit inspect``: attention rollout, attention distance, position
embedding similarity and embedding filters (the paper's Figures 6 and 7).

Photos are fitted to the model's input by their largest centred crop of the
input's aspect ratio, then resized: nothing is stretched. Rollout maps are
``OUTPUT/rollout/<stem>.png``; when two inputs share a stem, every map is
named by its path below the inputs' common folder (``a/cat.jpg`` ->
``a__cat.png``) and the command says so. Needs the ``inspect`` extra
(matplotlib), checked before any work.
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
    """Image files named by ``items`` (files, or folders searched recursively), each once."""
    from keras_vit.data import IMAGE_EXTENSIONS
    from keras_vit.data.sources import find_images

    paths, seen = [], set()
    for item in items:
        if os.path.isdir(item):
            found = find_images(item)
        elif os.path.isfile(item):
            found = [item]
        else:
            raise FileNotFoundError(f"Image file or folder not found: {item}")
        for path in found:
            if os.path.realpath(path) not in seen:
                seen.add(os.path.realpath(path))
                paths.append(path)
    if not paths:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {list(items)}.")
    return paths


def output_names(paths):
    """Names of the rollout maps: the files' stems, or their paths when stems collide.

    Returns:
        ``(names, root)``: one name per path, and the common folder the
        names are relative to (None when they are plain stems).
    """
    stems = [os.path.splitext(os.path.basename(path))[0] for path in paths]
    if len(set(stems)) == len(stems):
        return stems, None
    absolute = [os.path.abspath(path) for path in paths]
    root = os.path.commonpath([os.path.dirname(path) for path in absolute])
    relative = [os.path.relpath(path, root) for path in absolute]
    names = [os.path.splitext(path)[0].replace(os.sep, "__") for path in relative]
    if len(set(names)) < len(names):  # a/b.png and a/b.jpg: keep the extension
        names = [path.replace(os.sep, "__").replace(".", "_") for path in relative]
    return names, root


def run(args):
    from keras_vit.extras import check

    check(("matplotlib", "inspect", "keras-vit inspect (its figures)"))
    paths = image_paths(args.images)
    names, root = output_names(paths)
    os.makedirs(os.path.join(args.output, "rollout"), exist_ok=True)  # before any work

    import keras
    import numpy as np

    from keras_vit.analysis import inspection, plots
    from keras_vit.atomic import write_json_atomic
    from keras_vit.data.images import load_image, preprocess_input

    image_size = args.image_size
    model = load_model(args.model, args.weights, args.num_classes, image_size)
    size = input_size(model, image_size)
    if root is not None:
        print(
            f"Some images share a file name: rollout maps are named by their path under "
            f"{root} ({os.path.relpath(paths[0], root)} -> rollout/{names[0]}.png)."
        )
    distances = []
    progress = keras.utils.Progbar(len(paths), unit_name="image")
    for start in range(0, len(paths), args.batch_size):
        batch = paths[start : start + args.batch_size]
        images = preprocess_input(
            np.stack([load_image(p, size, model.channels, fit="crop") for p in batch])
        )
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
