"""Compiling ``vit_kernels.cc`` into a TensorFlow op library with the system C++ compiler.

TensorFlow has no fused attention op and no LayerNorm kernel without
per-call setup on CPU, and a custom op must be compiled against the very
TensorFlow that loads it, so the kernels ship as C++ source and are built on
the machine that runs them: ``$CXX`` (else ``c++``), TensorFlow's own
headers and framework library (``tf.sysconfig``), ``-O3 -march=native``.
About 25 s on two cores, once per source, TensorFlow, compiler and CPU
(``keras_vit.kernels.library`` keeps the result).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from keras_vit.atomic import atomic_path

SOURCE = Path(__file__).with_name("vit_kernels.cc")
COMPILER_ENV = "CXX"
#: ``-w``: TensorFlow's headers warn about their own deprecated APIs.
FLAGS = ("-shared", "-fPIC", "-O3", "-march=native", "-fopenmp-simd", "-w")
TIMEOUT_S = 600


class KernelBuildError(RuntimeError):
    """The kernels could not be compiled or loaded here (the message says why)."""


def compiler():
    """Path of the C++ compiler: ``$CXX``, else ``c++``.

    Raises:
        KernelBuildError: when it is not found.
    """
    name = os.environ.get(COMPILER_ENV) or "c++"
    path = shutil.which(name)
    if path is None:
        raise KernelBuildError(
            f"No C++ compiler: {name!r} is not on PATH. Install one (g++ or clang++) or "
            f"set {COMPILER_ENV} to its path."
        )
    return path


def command(cxx, output):
    """The compiler's argument list: ``SOURCE`` -> shared library ``output``."""
    import tensorflow as tf

    return [
        cxx,
        *FLAGS,
        str(SOURCE),
        "-o",
        os.fspath(output),
        *tf.sysconfig.get_compile_flags(),
        *tf.sysconfig.get_link_flags(),
    ]


def compile_library(target, cxx):
    """Compiles ``SOURCE`` with compiler ``cxx`` into ``target``, written atomically.

    Returns:
        ``target``.

    Raises:
        KernelBuildError: naming the compiler, with the end of its output,
            when it fails or runs past ``TIMEOUT_S``.
    """
    with atomic_path(target, ".so") as partial:
        try:
            run = subprocess.run(
                command(cxx, partial), capture_output=True, text=True, timeout=TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise KernelBuildError(
                f"{cxx} did not compile {SOURCE.name} within {TIMEOUT_S} s."
            ) from None
        except OSError as error:
            raise KernelBuildError(f"{cxx} could not be run: {error}.") from None
        if run.returncode != 0:
            tail = "\n".join((run.stderr or run.stdout).strip().splitlines()[-12:])
            raise KernelBuildError(
                f"{cxx} could not compile {SOURCE.name} (exit status {run.returncode}):\n{tail}"
            )
    return target
