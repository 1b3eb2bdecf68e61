"""Training recipes as data: YAML files in ``pipelines/`` plus ``--set`` overrides.

A recipe is a ``Recipe``: typed, validated settings with three nested
mappings, ``model`` (keyword arguments of ``keras_vit.ViT``, or a ``variant``
string such as ``"B/16"`` plus overrides for ``ViT.from_variant``),
``augment`` (see ``keras_vit.data.AUGMENT_DEFAULTS``) and ``mpp`` (the
settings of ``task: mpp``, masked patch prediction: see
``keras_vit.model.mpp.MPP_DEFAULTS``). Every key of a recipe file must be
known (the known ones are listed otherwise), and every value is checked
when the recipe is read, so a typo or a nonsensical number is an error
before any training starts, not deep inside it.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import yaml

from keras_vit import validation
from keras_vit.model.mpp import MPP_DEFAULTS, check_mpp_settings
from keras_vit.train.schedules import DECAYS
from keras_vit.train.strategies import STRATEGIES


def _pipelines_dir():
    """The source checkout's ``pipelines/``, else an installed copy in ``<prefix>/share``."""
    checkout = Path(__file__).resolve().parents[2] / "pipelines"
    installed = Path(sys.prefix) / "share" / "keras-vit" / "pipelines"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


#: Directory of the named recipes shipped with the project.
PIPELINES_DIR = _pipelines_dir()

#: Names of the optimisers and losses ``keras_vit.train.loop`` builds.
OPTIMIZERS = ("adam", "adamw", "sgd")
LOSSES = ("softmax_xent", "sigmoid_xent")
#: What a run trains: a classifier on labels, or masked patch prediction without them.
TASKS = ("classify", "mpp")


def _optional(check):
    return lambda value, name: None if value is None else check(value, name)


def _text(value, name):
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}.")
    return value


def _flag(value, name):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}.")
    return value


def _mapping(value, name):
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a mapping, got {value!r}.")
    return dict(value)


def _one_of(*choices):
    return lambda value, name: validation.choice(value, name, choices)


def _int(minimum=None, maximum=None):
    return lambda value, name: validation.integer(value, name, minimum, maximum)


def _number(minimum=None, maximum=None, exclusive_minimum=False):
    return lambda value, name: validation.number(value, name, minimum, maximum, exclusive_minimum)


def _image_size(value, name):
    size = validation.pair(value, name)
    return size[0] if size[0] == size[1] else size


def _precision(value, name):
    if isinstance(value, bool):
        return value
    return _one_of("float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16")(value, name)


def _verbosity(value, name):
    return value if value == "auto" else _int(0, 2)(value, name)


def _mpp(value, name):
    return check_mpp_settings(_mapping(value, name), prefix=f"{name}.")


def _setting(default, check, help_text):
    return dataclasses.field(
        default_factory=lambda: default if not isinstance(default, dict) else dict(default),
        metadata={"check": check, "help": help_text},
    )


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Every setting of a training run, checked when built (``ValueError`` naming the key)."""

    name: str | None = _setting(None, _optional(_text), "recipe name (the YAML file's stem)")
    task: str = _setting("classify", _one_of(*TASKS), "classify | mpp (masked patch prediction)")
    mpp: dict = _setting(MPP_DEFAULTS, _mpp, "task=mpp settings (keras_vit.MaskedPatchPrediction)")
    # data
    data: str = _setting("digits", _text, "digits | tfds:NAME[:SPLIT] | DIR | *.tfrecord")
    data_dir: str | None = _setting(None, _optional(_text), "tfds data directory")
    download: bool = _setting(False, _flag, "let tfds download and prepare a missing data set")
    eval_data: str | None = _setting(None, _optional(_text), "evaluation source; None: dev split")
    dev_percent: float | None = _setting(
        None, _optional(_number(0, 100, exclusive_minimum=True)), "percent held out as dev set"
    )
    image_size: int | tuple = _setting(224, _image_size, "input size: SIZE or [HEIGHT, WIDTH]")
    channels: int = _setting(3, _one_of(1, 3), "input channels")
    num_classes: int | None = _setting(None, _optional(_int(1)), "None: taken from the data")
    batch_size: int = _setting(512, _int(1), "global batch size (over all replicas)")
    eval_batch_size: int | None = _setting(None, _optional(_int(1)), "None: batch_size")
    cache: bool = _setting(False, _flag, "cache decoded examples in memory")
    shuffle_buffer: int = _setting(10_000, _int(1), "shuffle buffer size")
    deterministic: bool = _setting(False, _flag, "fixed tf.data order, deterministic ops")
    augment: dict = _setting({}, _mapping, "augmentation overrides (AUGMENT_DEFAULTS)")
    # model
    model: dict = _setting({}, _mapping, "ViT arguments, or variant plus overrides")
    weights: str | None = _setting(None, _optional(_text), "checkpoint to fine-tune from")
    new_head: bool = _setting(True, _flag, "with weights: a new zero-initialised head")
    # optimiser and schedule
    optimizer: str = _setting("adam", _one_of(*OPTIMIZERS), "adam | adamw | sgd")
    learning_rate: float = _setting(1e-3, _number(0, exclusive_minimum=True), "peak learning rate")
    weight_decay: float = _setting(0.0, _number(0), "weight decay")
    beta_1: float = _setting(0.9, _number(0, 1), "Adam beta_1")
    beta_2: float = _setting(0.999, _number(0, 1), "Adam beta_2")
    momentum: float = _setting(0.9, _number(0, 1), "SGD momentum")
    global_clipnorm: float | None = _setting(
        1.0, _optional(_number(0, exclusive_minimum=True)), "global-norm clipping; None: off"
    )
    gradient_accumulation_steps: int | None = _setting(
        None, _optional(_int(1)), "micro-batches per optimiser update"
    )
    warmup_steps: int = _setting(0, _int(0), "linear warm-up steps")
    decay: str = _setting("cosine", _one_of(*DECAYS), "cosine | linear | constant")
    end_learning_rate: float = _setting(0.0, _number(0), "learning rate at the end")
    loss: str = _setting("softmax_xent", _one_of(*LOSSES), "softmax_xent | sigmoid_xent")
    label_smoothing: float = _setting(0.0, _number(0, 1), "label smoothing")
    # loop
    epochs: int | None = _setting(None, _optional(_int(1)), "epochs (or steps)")
    steps: int | None = _setting(
        None, _optional(_int(1)), "total optimiser steps; overrides epochs"
    )
    steps_per_epoch: int | None = _setting(
        None, _optional(_int(1)), "with steps: log and checkpoint every N steps"
    )
    seed: int = _setting(0, _int(0), "seed of data order, augmentation and initialisation")
    jit_compile: bool = _setting(False, _flag, "XLA-compile the training step")
    steps_per_execution: int = _setting(1, _int(1), "batches per compiled call")
    mixed_precision: bool | str = _setting(False, _precision, "true (mixed_bfloat16) or a policy")
    strategy: str = _setting("auto", _one_of(*STRATEGIES), "distribution strategy")
    tpu: str | None = _setting(None, _optional(_text), "TPU address for strategy=tpu")
    cpu_devices: int | None = _setting(None, _optional(_int(1)), "mirror over N logical CPUs")
    output: str | None = _setting(None, _optional(_text), "run directory (runs/<name>)")
    tensorboard: bool = _setting(True, _flag, "write TensorBoard logs")
    verbose: str | int = _setting("auto", _verbosity, "Keras fit verbosity: auto, 0, 1, 2")

    def __post_init__(self):
        for field in dataclasses.fields(self):
            checked = field.metadata["check"](getattr(self, field.name), field.name)
            object.__setattr__(self, field.name, checked)
        self._check_together()

    def _check_together(self):
        if self.task == "mpp":
            mixing = [key for key in ("mixup", "cutmix") if self.augment.get(key)]
            if mixing:
                raise ValueError(
                    f"augment {mixing} mix labels; task=mpp trains without labels: set them to 0."
                )
        spe = self.steps_per_epoch
        if self.steps and spe and self.steps > spe and self.steps % spe:
            low, high = self.steps // spe * spe, (self.steps // spe + 1) * spe
            raise ValueError(
                f"steps={self.steps} is not a multiple of steps_per_epoch={spe} (Keras "
                f"trains whole epochs): set steps to {low} or {high}, or a steps_per_epoch "
                f"that divides {self.steps}."
            )

    def replace(self, **changes):
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """The recipe as plain data (YAML-ready, ``image_size`` a list when not square)."""
        data = dataclasses.asdict(self)
        if isinstance(data["image_size"], tuple):
            data["image_size"] = list(data["image_size"])
        return data


#: Every recipe key with its default.
DEFAULTS = Recipe().to_dict()

#: Short names accepted by ``--set`` for the most common keys.
ALIASES = {"variant": "model.variant"}


def recipe_path(name_or_path):
    """Resolves ``"digits_scratch"`` or a path to an existing recipe file.

    A path such as ``pipelines/cifar10_finetune.yaml`` that does not exist
    from the current directory is looked up in the shipped ``pipelines/``.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = PIPELINES_DIR / f"{name_or_path}.yaml"
    elif not path.is_file() and path.parent.name == "pipelines":
        path = PIPELINES_DIR / path.name
    if not path.is_file():
        known = sorted(p.stem for p in PIPELINES_DIR.glob("*.yaml"))
        raise FileNotFoundError(
            f"Recipe not found: {name_or_path!r}; expected a YAML file or one of {known}."
        )
    return path


def _read_yaml(path):
    try:
        with open(path, encoding="utf-8") as file:
            content = yaml.safe_load(file)
    except yaml.YAMLError as err:  # safe_load refuses !!python tags too
        raise ValueError(f"Recipe {path} is not valid YAML (or not plain data): {err}") from None
    content = {} if content is None else content
    if not isinstance(content, dict):
        raise ValueError(f"Recipe {path} must be a mapping, got {type(content).__name__}.")
    return content


def _parse_override(item):
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"Expected an override KEY=VALUE, got {item!r}.")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ValueError(f"Override {item!r}: the value is not valid YAML ({err}).") from None


def load_recipe(name_or_path, overrides=()):
    """Reads a recipe and applies ``key=value`` overrides.

    Args:
        name_or_path: str or path. A recipe name in ``pipelines/`` (e.g.
            ``"digits_scratch"``) or a YAML file.
        overrides: iterable of ``"key=value"`` strings; values are parsed as
            YAML (``epochs=3``, ``mixed_precision=true``), dotted keys reach
            into ``model`` and ``augment`` (``model.hidden_size=32``).

    Returns:
        ``Recipe``: the defaults updated with the file and the overrides.

    Raises:
        FileNotFoundError: if the recipe does not exist.
        ValueError: for an unknown key, a malformed override or file, or a
            value of the wrong type or out of range.
    """
    path = recipe_path(name_or_path)
    settings = {"name": path.stem}
    for key, value in _read_yaml(path).items():
        set_value(settings, str(key), value)
    for item in overrides:
        set_value(settings, *_parse_override(item))
    return Recipe(**settings)


def set_value(settings, key, value):
    """Sets ``settings[key] = value``; ``key`` may be dotted (``model.hidden_size``).

    Args:
        settings: dict of recipe keys (not yet a ``Recipe``).

    Raises:
        ValueError: if the key is not a recipe key (the known ones are listed).
    """
    key = ALIASES.get(key, key)
    head, _, rest = key.partition(".")
    if head not in DEFAULTS:
        raise ValueError(f"Unknown recipe key {head!r}; expected one of {sorted(DEFAULTS)}.")
    if rest:
        if not isinstance(DEFAULTS[head], dict):
            raise ValueError(f"Recipe key {head!r} is not a mapping; cannot set {key!r}.")
        settings.setdefault(head, {})[rest] = value
    elif isinstance(DEFAULTS[head], dict):
        if not isinstance(value, dict):
            raise ValueError(f"Recipe key {head!r} expects a mapping, got {value!r}.")
        settings.setdefault(head, {}).update(value)
    else:
        settings[head] = value
