"""Optional dependencies: each feature names the extra that installs it.

``require("tf2onnx", "export", "ONNX export")`` imports and returns the module,
or raises ``MissingExtraError`` (an ``ImportError``) that says which feature
needs it and the one command that installs it. Callers check every extra a
job needs before they start it, so nothing is half-done when one is missing.
"""

from __future__ import annotations

import importlib
import importlib.util

#: Everything but the tests: ``pip install "keras-vit[all]"``.
ALL = "all"


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module, extra, feature):
    """Imports ``module`` for ``feature``.

    Args:
        module: str. Module to import (``"tf2onnx"``).
        extra: str. The ``setup.cfg`` extra that installs it (``"export"``).
        feature: str. What needs it, for the message (``"ONNX export"``).

    Returns:
        The module.

    Raises:
        MissingExtraError: if it is not installed.
    """
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise MissingExtraError(
            f"{feature} needs {module.split('.')[0]}, which is not installed: "
            f'pip install "keras-vit[{extra}]" (or "keras-vit[{ALL}]" for every feature).'
        )
    return importlib.import_module(module)


def check(*requirements):
    """``MissingExtraError`` for the first missing ``(module, extra, feature)``; imports nothing."""
    for module, extra, feature in requirements:
        if importlib.util.find_spec(module.split(".")[0]) is None:
            require(module, extra, feature)
