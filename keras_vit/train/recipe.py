"""Training recipes as data: YAML files in ``pipelines/`` plus ``--set`` overrides.

A recipe is a flat mapping of training settings (see ``DEFAULTS``) with two
nested mappings: ``model`` (keyword arguments of ``keras_vit.ViT``, or a
``variant`` string such as ``"B/16"`` plus overrides for ``build_variant``)
and ``augment`` (see ``keras_vit.data.AUGMENT_DEFAULTS``). Every key of a
recipe file must be known, so a typo is an error rather than a silent default.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml


def _pipelines_dir():
    """The source checkout's ``pipelines/``, else an installed copy in ``<prefix>/share``."""
    checkout = Path(__file__).resolve().parents[2] / "pipelines"
    installed = Path(sys.prefix) / "share" / "keras-vit" / "pipelines"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


#: Directory of the named recipes shipped with the project.
PIPELINES_DIR = _pipelines_dir()

#: Every recipe key with its default. ``None`` means "not set".
DEFAULTS = {
    "name": None,
    # data
    "data": "digits",  # digits | tfds:NAME[:SPLIT] | DIR (class subfolders) | *.tfrecord glob
    "data_dir": None,  # tfds data directory
    "download": False,  # let tfds download and prepare a missing data set
    "eval_data": None,  # separate evaluation source; None: held out from `data`
    "dev_percent": None,  # hold out this percent of the training data as dev set
    "image_size": 224,
    "channels": 3,
    "num_classes": None,  # None: taken from the data
    "batch_size": 512,  # global batch size (over all replicas)
    "eval_batch_size": None,
    "cache": False,
    "shuffle_buffer": 10_000,
    "deterministic": False,  # fixed tf.data order and deterministic ops (slower)
    "augment": {},
    # model
    "model": {},
    "weights": None,  # checkpoint to fine-tune from
    "new_head": True,  # with weights: replace the head by a zero-initialised one
    # optimiser and schedule
    "optimizer": "adam",  # adam | adamw | sgd
    "learning_rate": 1e-3,  # peak learning rate
    "weight_decay": 0.0,
    "beta_1": 0.9,
    "beta_2": 0.999,
    "momentum": 0.9,
    "global_clipnorm": 1.0,
    "gradient_accumulation_steps": None,
    "warmup_steps": 0,
    "decay": "cosine",  # cosine | linear | constant
    "end_learning_rate": 0.0,
    "loss": "softmax_xent",  # softmax_xent | sigmoid_xent
    "label_smoothing": 0.0,
    # loop
    "epochs": None,
    "steps": None,  # total optimiser steps; overrides `epochs`
    "steps_per_epoch": None,  # with `steps`: log and checkpoint every N steps
    "seed": 0,
    "jit_compile": False,
    "steps_per_execution": 1,  # batches per compiled call (fewer Python round trips)
    "mixed_precision": False,  # False | True (mixed_bfloat16) | a policy name
    "strategy": "auto",  # auto | cpu | mirrored | multiworker | tpu
    "tpu": None,  # TPU address for strategy=tpu
    "cpu_devices": None,  # mirror over N logical CPU devices (data parallelism on CPU)
    "output": None,  # run directory
    "tensorboard": True,
    "verbose": "auto",
}

#: Short names accepted by ``--set`` for the most common keys.
ALIASES = {"variant": "model.variant"}


def add_override_argument(parser):
    """Adds ``--set KEY=VALUE ...`` (recipe overrides) to a command's parser."""
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="Override recipe keys; values are YAML (epochs=3, data=DIR, weights=PATH, "
        "model.hidden_size=32, mixed_precision=true, jit_compile=false).",
    )


def recipe_path(name_or_path):
    """Resolves ``"digits_scratch"`` or a path to an existing recipe file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PIPELINES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PIPELINES_DIR.glob("*.yaml"))
        raise FileNotFoundError(
            f"Recipe not found: {name_or_path!r}; expected a YAML file or one of {known}."
        )
    return path


def load_recipe(name_or_path, overrides=()):
    """Reads a recipe and applies ``key=value`` overrides.

    Args:
        name_or_path: str or path. A recipe name in ``pipelines/`` (e.g.
            ``"digits_scratch"``) or a YAML file.
        overrides: iterable of ``"key=value"`` strings; values are parsed as
            YAML (``epochs=3``, ``mixed_precision=true``), dotted keys reach
            into ``model`` and ``augment`` (``model.hidden_size=32``).

    Returns:
        dict: ``DEFAULTS`` updated with the file and the overrides.

    Raises:
        FileNotFoundError: if the recipe does not exist.
        ValueError: for an unknown key or a malformed override.
    """
    path = recipe_path(name_or_path)
    with open(path) as f:
        content = yaml.safe_load(f) or {}
    if not isinstance(content, dict):
        raise ValueError(f"Recipe {path} must be a mapping, got {type(content).__name__}.")
    recipe = copy.deepcopy(DEFAULTS)
    recipe["name"] = path.stem
    for key, value in content.items():
        set_value(recipe, key, value)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"Expected an override KEY=VALUE, got {item!r}.")
        set_value(recipe, key.strip(), yaml.safe_load(value))
    return recipe


def set_value(recipe, key, value):
    """Sets ``recipe[key] = value``; ``key`` may be dotted (``model.hidden_size``).

    Raises:
        ValueError: if the key is not a recipe key.
    """
    key = ALIASES.get(key, key)
    head, _, rest = key.partition(".")
    if head not in DEFAULTS:
        raise ValueError(f"Unknown recipe key {head!r}; expected one of {sorted(DEFAULTS)}.")
    if rest:
        if not isinstance(recipe[head], dict):
            raise ValueError(f"Recipe key {head!r} is not a mapping; cannot set {key!r}.")
        recipe[head][rest] = value
    elif isinstance(DEFAULTS[head], dict):
        if not isinstance(value, dict):
            raise ValueError(f"Recipe key {head!r} expects a mapping, got {value!r}.")
        recipe[head].update(value)
    else:
        recipe[head] = value
