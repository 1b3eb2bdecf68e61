"""Checkpoints: official / big_vision ``.npz``, timm and Hugging Face weights, Keras files.

This package reads, names and writes tensors; it knows nothing of how a model
is built (``keras_vit.model`` builds models from what it reads):

- ``open_weights(spec)``: a path, folder, registry name or URL, read once
  into a ``Checkpoint`` (or a ``KerasFile``);
- ``checkpoint_config(checkpoint)``: the model facts a checkpoint holds;
- ``to_keras_tensors`` / ``assign_tensors``: renaming with the format's
  mapping table, then all-or-nothing assignment to a model's variables;
- ``save_official_npz``, ``save_huggingface``, ``save_keras``: writers;
- ``REGISTRY``: named checkpoints with several sources each, downloaded once
  into ``$KERAS_VIT_CACHE`` (default ``~/.cache/keras_vit``) with timeouts,
  bounded retries and a recorded (or pinned) SHA-256 (``download``).
"""

from keras_vit.weights.assign import CheckpointMismatchError, assign_tensors, model_variables
from keras_vit.weights.downloads import DownloadError, DownloadPolicy, download
from keras_vit.weights.infer import checkpoint_config
from keras_vit.weights.mappings import to_keras_tensors
from keras_vit.weights.readers import FORMAT_DEFAULTS, Checkpoint, read_checkpoint
from keras_vit.weights.registry import REGISTRY, WeightsEntry, fetch, get_entry, registry_table
from keras_vit.weights.resolve import KerasFile, open_weights, registry_entry, resolve_weights
from keras_vit.weights.writers import save_huggingface, save_keras, save_official_npz

__all__ = [
    "FORMAT_DEFAULTS",
    "REGISTRY",
    "Checkpoint",
    "CheckpointMismatchError",
    "DownloadError",
    "DownloadPolicy",
    "KerasFile",
    "assign_tensors",
    "checkpoint_config",
    "download",
    "fetch",
    "get_entry",
    "model_variables",
    "open_weights",
    "read_checkpoint",
    "registry_entry",
    "resolve_weights",
    "save_huggingface",
    "save_keras",
    "registry_table",
    "save_official_npz",
    "to_keras_tensors",
    "WeightsEntry",
]
