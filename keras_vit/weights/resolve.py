"""Where weights come from: a path, a folder, a registry name or a URL, read once.

``open_weights(spec)`` is the one entry point: it resolves the spec to a local
file (downloading registry names and URLs into the cache) and returns either
a ``Checkpoint`` (official / big_vision ``.npz``, timm, Hugging Face) or a
``KerasFile`` (``.keras`` / ``.weights.h5``, which Keras itself loads).
A registry name or URL may end in ``#sha256=<hex>`` to pin the file's digest.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass

from keras_vit.weights.downloads import PIN_MARKER, download, split_pin
from keras_vit.weights.readers import Checkpoint, read_checkpoint
from keras_vit.weights.registry import REGISTRY, fetch, get_entry

KERAS_SUFFIXES = (".weights.h5", ".keras")
_CHECKPOINT_SUFFIXES = (".npz", ".safetensors", ".h5", ".keras")


@dataclass(frozen=True)
class KerasFile:
    """A Keras ``.keras`` (architecture + weights) or ``.weights.h5`` file.

    Attributes:
        path: str. The local file.
    """

    path: str

    @property
    def has_architecture(self):
        """True for ``.keras`` files (``.weights.h5`` holds weights only)."""
        return self.path.endswith(".keras")


def registry_entry(weights):
    """The ``REGISTRY`` entry of ``weights`` (pinned or not), or None; nothing is downloaded."""
    if isinstance(weights, (str, os.PathLike)):
        name = os.fspath(weights)
        return REGISTRY.get(name.partition(PIN_MARKER)[0])
    return None


def resolve_weights(weights):
    """Local path of ``weights``: a path, a registry name or a URL.

    Returns:
        ``(path, WeightsEntry or None)``.

    Raises:
        FileNotFoundError: for a path that does not exist.
        ValueError: for a bare name that is not in ``REGISTRY`` (the known
            names are listed), or a malformed ``#sha256=`` pin.
        keras_vit.weights.downloads.DownloadError: (an ``OSError``) when a
            download fails, naming the URL.
    """
    weights = os.fspath(weights)
    if os.path.exists(weights):
        return weights, None
    if split_pin(weights)[0] in REGISTRY:
        return fetch(weights), get_entry(weights)
    if urllib.parse.urlparse(weights).scheme in ("http", "https", "file"):
        return download(weights), None
    if os.sep in weights or os.path.splitext(weights)[1] in _CHECKPOINT_SUFFIXES:
        raise FileNotFoundError(f"Weights file not found: {weights}")
    return None, get_entry(weights)  # raises, listing the known names


def open_weights(weights):
    """Resolves and reads ``weights`` once.

    Args:
        weights: a path or folder, a ``REGISTRY`` name, a URL, or a
            ``Checkpoint`` / ``KerasFile`` (returned as it is).

    Returns:
        ``(source, entry)``: a ``Checkpoint`` or a ``KerasFile``, and the
        ``WeightsEntry`` of a registry name (else None).

    Raises:
        FileNotFoundError, ValueError: as ``resolve_weights`` and
            ``read_checkpoint``.
    """
    if isinstance(weights, (Checkpoint, KerasFile)):
        return weights, None
    path, entry = resolve_weights(weights)
    if path.endswith(KERAS_SUFFIXES):
        return KerasFile(path), entry
    return read_checkpoint(path), entry
