"""The kernels' op library, built once into the cache and loaded once per process.

``load()`` returns the module of TensorFlow ops (``tf.load_op_library``):
``keras_vit_layer_norm`` and ``keras_vit_self_attention``. The library is
``$KERAS_VIT_CACHE/kernels/vit_kernels-<key>.so``, the key a digest of the
source, the TensorFlow version and its build flags, the compiler and this
CPU (``-march=native`` code runs on the CPU it was built for), so a change of
any of them builds a new one. The SHA-256 of each library is recorded beside
it when it is built (``.sha256``); a library that disagrees (cut short,
changed) is built again. Loading a library runs its code: it is a program
built on this machine from the source that ships with keras-vit, and the
cache folder is to be trusted like the Python environment itself.
"""

from __future__ import annotations

import hashlib
import os
import platform
import threading

from keras_vit.atomic import write_bytes_atomic
from keras_vit.cache import cache_dir
from keras_vit.digests import recorded_digest, sha256_of
from keras_vit.kernels.build import SOURCE, KernelBuildError, command, compile_library, compiler
from keras_vit.messages import logger

_LOCK = threading.Lock()
#: Library path -> the loaded module, or the KernelBuildError it gave.
_LOADED = {}


def library_path(cxx=None):
    """Where the library for this source, TensorFlow, compiler ``cxx`` and CPU lives."""
    import tensorflow as tf

    cxx = cxx or compiler()
    key = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        tf.__version__.encode(),
        " ".join(command(os.path.realpath(cxx), "")).encode(),
        _cpu_fingerprint().encode(),
    ):
        key.update(hashlib.sha256(part).digest())
    return os.path.join(cache_dir(), "kernels", f"vit_kernels-{key.hexdigest()[:16]}.so")


def load():
    """The kernels' ops module, built into the cache first if needed.

    Returns:
        the module of ``tf.load_op_library``.

    Raises:
        KernelBuildError: when there is no compiler, it fails, the cache is
            not writable or the library does not load (the same error again
            for later calls in this process, without a second attempt).
    """
    cxx = compiler()
    path = library_path(cxx)
    with _LOCK:
        if path not in _LOADED:
            try:
                _LOADED[path] = _built_and_loaded(path, cxx)
            except KernelBuildError as error:
                _LOADED[path] = error
        result = _LOADED[path]
    if isinstance(result, KernelBuildError):
        raise result
    return result


def is_intact(path):
    """Whether ``path`` exists with the SHA-256 recorded beside it when it was built."""
    recorded = recorded_digest(path)
    try:
        return recorded is not None and recorded == sha256_of(path)
    except OSError:
        return False


def _built_and_loaded(path, cxx):
    import tensorflow as tf

    if not is_intact(path):
        logger.info(
            "Compiling keras-vit's CPU kernels into %s (once for this TensorFlow, compiler "
            "and CPU; about 30 s).",
            path,
        )
        try:
            compile_library(path, cxx)
            write_bytes_atomic(sha256_of(path).encode("ascii"), path + ".sha256")
        except OSError as error:
            raise KernelBuildError(
                f"The kernels could not be written to {path} ({error.strerror or error}): set "
                "KERAS_VIT_CACHE to a writable folder."
            ) from None
    try:
        return tf.load_op_library(path)
    except (tf.errors.OpError, OSError) as error:
        raise KernelBuildError(f"The kernels library {path} did not load: {error}") from None


def _cpu_fingerprint():
    """The CPU's model and instruction-set flags (what ``-march=native`` compiles for)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            lines = [line for line in file if line.startswith(("model name", "flags"))]
        return platform.machine() + "".join(sorted(set(lines)))
    except OSError:
        return platform.machine() + platform.processor()
