"""keras-vit's cache folder: downloaded weights and the CPU kernels built on this machine."""

from __future__ import annotations

import os

CACHE_ENV = "KERAS_VIT_CACHE"


def cache_dir():
    """The cache: ``$KERAS_VIT_CACHE`` or ``~/.cache/keras_vit``."""
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "keras_vit")
