"""``release_memory``: unreachable objects freed, with or without glibc."""

import ctypes
import gc
import weakref

from keras_vit.memory import release_memory


class Node:
    pass


def cycle():
    """A reference cycle that only the garbage collector frees, and a weak reference to it."""
    node = Node()
    node.self = node
    return weakref.ref(node)


def test_release_memory_collects_unreachable_cycles():
    gc.disable()  # no automatic collection between the two lines
    try:
        ref = cycle()
        assert ref() is not None
        release_memory()
        assert ref() is None
    finally:
        gc.enable()


def test_release_memory_runs_where_the_c_library_is_not_glibc(monkeypatch):
    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    gc.disable()
    try:
        ref = cycle()
        release_memory()
        assert ref() is None
    finally:
        gc.enable()
