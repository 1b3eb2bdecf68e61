"""``release_memory``: unreachable objects freed, with or without glibc."""

import ctypes
import gc
import weakref

import pytest

from keras_vit.memory import release_memory


class Node:
    pass


@pytest.fixture
def unreachable_cycle():
    """A weak reference to a reference cycle that only the garbage collector frees.

    Automatic collection is off while the test runs, so only an explicit
    collection can free it.
    """
    gc.disable()
    node = Node()
    node.self = node
    ref = weakref.ref(node)
    del node
    try:
        yield ref
    finally:
        gc.enable()


def test_release_memory_collects_unreachable_cycles(unreachable_cycle):
    assert unreachable_cycle() is not None
    release_memory()
    assert unreachable_cycle() is None


def test_release_memory_runs_where_the_c_library_is_not_glibc(monkeypatch, unreachable_cycle):
    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    release_memory()
    assert unreachable_cycle() is None
