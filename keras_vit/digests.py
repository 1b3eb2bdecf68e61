"""SHA-256 digests of files, and the digest recorded beside a file (``<file>.sha256``)."""

from __future__ import annotations

import hashlib

_CHUNK = 1 << 20


def sha256_of(path):
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def recorded_digest(path):
    """The digest recorded beside ``path`` (``<path>.sha256``), lower case, or None."""
    try:
        with open(path + ".sha256", encoding="ascii") as f:
            return f.read().strip().lower() or None
    except (OSError, UnicodeDecodeError):
        return None
