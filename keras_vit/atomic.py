"""Atomic file writes: write beside the target, then rename into place.

Every file keras-vit writes (checkpoints, exports, metrics, figures, data)
goes through ``atomic_path``, so an interrupted write never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile


def _file_mode():
    """Permissions a plain ``open(path, "w")`` would give (``mkstemp`` gives 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a temporary path beside ``path``; renames it to ``path`` on success.

    The temporary file is in the target's folder (created if missing), so the
    rename is atomic; it ends with ``suffix`` for writers that check the
    extension (``.keras``, ``.weights.h5``). On any error it is removed and
    ``path`` is left as it was.

    Args:
        path: str or path. Final file.
        suffix: str. Extension of the temporary file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=folder, prefix=".partial-", suffix=suffix)
    os.close(handle)
    try:
        yield partial
        os.chmod(partial, _file_mode())
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def write_json_atomic(obj, path, indent=2):
    """Writes ``obj`` as JSON to ``path`` atomically (non-JSON values as ``str``)."""
    with atomic_path(path, ".json") as partial, open(partial, "w", encoding="utf-8") as file:
        json.dump(obj, file, indent=indent, default=str)
    return os.fspath(path)


def write_bytes_atomic(data, path, suffix=""):
    """Writes ``data`` (bytes) to ``path`` atomically."""
    with atomic_path(path, suffix) as partial, open(partial, "wb") as file:
        file.write(data)
    return os.fspath(path)
