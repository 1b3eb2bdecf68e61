"""Returning memory to the system after work that frees a lot of it at once."""

from __future__ import annotations

import contextlib
import ctypes
import gc


def release_memory():
    """Frees unreachable objects and, with glibc, returns freed heap memory to the system.

    TensorFlow's graph optimisation and converters leave reference cycles
    (graphs, loaded SavedModels) and free large buffers (copies of graph
    constants) from threads with heap arenas of their own, which glibc keeps
    mapped: without ``malloc_trim`` that memory stays resident and counts
    against every later stage's peak. A no-op for the trim where the C
    library is not glibc.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)
