"""``keras-vit convert SRC DST``: any supported checkpoint to any writable one.

SRC: an official ``.npz`` (vit_jax, AugReg, big_vision), a timm or Hugging
Face ``.safetensors`` file or folder, a ``.keras`` / ``.weights.h5`` file
(with ``--variant``), a registry name or a URL. DST by its suffix: ``.keras``
(whole model), ``.weights.h5`` (weights), ``.npz`` (official layout), or any
other path: a Hugging Face folder (``model.safetensors`` + ``config.json``).
"""

from __future__ import annotations

from keras_vit_cli._common import (
    NPZ_LAYOUTS,
    POSEMB_INTERPOLATIONS,
    SEMANTICS,
    add_image_size_argument,
    positive_int,
)

NAME = "convert"
HELP = (
    "Convert a checkpoint (.npz, timm, Hugging Face, registry name) to .keras, "
    ".weights.h5, .npz or a Hugging Face folder."
)


def add_arguments(parser):
    """Adds the ``convert`` options to an ``argparse`` parser."""
    parser.add_argument("src", help="checkpoint file, folder, registry name or URL")
    parser.add_argument(
        "dst", help="output: .keras, .weights.h5, .npz, or a folder for Hugging Face"
    )
    parser.add_argument(
        "--variant", help='variant to build, e.g. "B/16" (default: from the checkpoint)'
    )
    add_image_size_argument(parser, "Resolution (position embeddings are resized):")
    parser.add_argument(
        "--num-classes",
        type=positive_int,
        help="classes of a new head (the checkpoint's head is then not loaded)",
    )
    parser.add_argument("--no-top", action="store_true", help="drop the classification head")
    parser.add_argument("--semantics", choices=("auto", *SEMANTICS), default="auto")
    parser.add_argument(
        "--posemb-interpolation", choices=("auto", *POSEMB_INTERPOLATIONS), default="auto"
    )
    parser.add_argument(
        "--num-heads", type=positive_int, help="attention heads, if the checkpoint cannot tell"
    )
    parser.add_argument(
        "--npz-layout",
        choices=NPZ_LAYOUTS,
        default="vit_jax",
        help="layout of an .npz destination: vit_jax (official, AugReg) or big_vision",
    )


def _model_arguments(args):
    kwargs = {}
    image_size = args.image_size
    if image_size is not None:
        kwargs["image_size"] = image_size
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    if args.no_top:
        kwargs["include_top"] = False
    for key in ("semantics", "posemb_interpolation"):
        if getattr(args, key) != "auto":
            kwargs[key] = getattr(args, key)
    return kwargs


def build_model(args):
    """The model SRC describes, with the command's overrides, loaded."""
    from keras_vit import ViT

    kwargs = _model_arguments(args)
    if args.variant:
        return ViT.from_variant(args.variant, weights=args.src, **kwargs)
    return ViT.from_checkpoint(args.src, num_heads=args.num_heads, **kwargs)


def write(model, dst, npz_layout="vit_jax"):
    """Writes ``model`` to ``dst`` in the format its suffix names."""
    from keras_vit.weights import save_huggingface, save_keras, save_official_npz

    if dst.endswith((".keras", ".weights.h5")):
        return save_keras(model, dst), "Keras"
    if dst.endswith(".npz"):
        return save_official_npz(model, dst, npz_layout), f"official .npz ({npz_layout} layout)"
    return save_huggingface(model, dst), "Hugging Face"


def run(args):
    """Converts ``args.src`` to ``args.dst``; returns the exit code."""
    from tqdm.auto import tqdm

    with tqdm(total=2, desc="convert", unit="step") as bar:
        bar.set_postfix_str("reading")
        model = build_model(args)
        bar.update()
        bar.set_postfix_str("writing")
        path, kind = write(model, args.dst, args.npz_layout)
        bar.update()
    print(
        f"Wrote {kind} {path}: {model.name}, image size {model.image_size}, "
        f"{model.count_params():,} parameters, semantics={model.semantics!r}, "
        f"posemb_interpolation={model.posemb_interpolation!r}."
    )
    return 0
