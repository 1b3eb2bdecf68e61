"""The implementations the benchmark knows, and what each of them runs."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from benchmarks import gemm_floor, keras_impls, openvino_impls, portable_impls


@dataclass(frozen=True)
class Impl:
    """One implementation under test.

    Attributes:
        builder: ``(task, precision, workdir) -> step`` callable; raises if
            the implementation cannot run here (the row then says why).
        tasks: tasks it runs.
        precisions: precisions it runs.
        ours: True for keras-vit paths, False for peers.
        quick: included in ``--quick`` runs.
        exported: builds a file in the workdir first (``run.py`` does that
            in a separate process, so the timed process only loads it).
        env: ``(name, value)`` pairs of the job's process environment.
    """

    builder: object
    tasks: tuple
    precisions: tuple
    ours: bool
    quick: bool = True
    exported: bool = False
    env: tuple = ()


#: TensorFlow switches its oneDNN kernels off by default on x86 CPUs without
#: AVX512-VNNI, AVX512-BF16 or AMX (an AVX2 AMD EPYC); "+onednn" rows force them on.
ONEDNN_ON = (("TF_ENABLE_ONEDNN_OPTS", "1"),)


ALL_TASKS = ("infer_b1", "infer_b16", "train")
INFERENCE = ("infer_b1", "infer_b16")


def _frozen(precisions=("fp32", "bf16"), quick=True, env=(), **options):
    """A ``keras_vit.freeze`` inference row.

    ``options`` are ``keras_impls.build_keras_vit_frozen``'s: ``jit_compile``,
    ``policy``, ``native_kernels``.
    """
    builder = functools.partial(keras_impls.build_keras_vit_frozen, **options)
    return Impl(builder, INFERENCE, precisions, True, quick=quick, env=env)


IMPLS = {
    "keras-vit": Impl(keras_impls.build_keras_vit, ALL_TASKS, ("fp32", "bf16"), True),
    "keras-vit-onednn": Impl(
        functools.partial(keras_impls.build_keras_vit, jit_compile=False),
        ALL_TASKS,
        ("fp32", "bf16"),
        True,
    ),
    "keras-vit-onednn-bf16w": Impl(
        functools.partial(keras_impls.build_keras_vit, jit_compile=False, policy="bfloat16"),
        INFERENCE,
        ("bf16",),
        True,
    ),
    "keras-vit-frozen": _frozen(),
    "keras-vit-frozen-bf16w": _frozen(("bf16",), policy="bfloat16"),
    # freeze without keras-vit's CPU kernels: TensorFlow's own LayerNorm and attention ops
    "keras-vit-frozen-tfops": _frozen(quick=False, native_kernels=False),
    "keras-vit-frozen-graph": _frozen(quick=False, jit_compile=False),
    "keras-vit-frozen-xla": _frozen(quick=False, jit_compile=True),
    "keras-vit-frozen+onednn": _frozen(env=ONEDNN_ON, jit_compile=False),
    "keras-vit-savedmodel": Impl(
        portable_impls.build_saved_model, INFERENCE, ("fp32",), True, exported=True
    ),
    "keras-vit-savedmodel-xla": Impl(
        functools.partial(portable_impls.build_saved_model, jit_compile=True),
        INFERENCE,
        ("fp32",),
        True,
        quick=False,
        exported=True,
    ),
    "keras-vit-tflite": Impl(
        portable_impls.build_tflite, INFERENCE, ("fp32", "int8"), True, exported=True
    ),
    "keras-vit-onnx": Impl(
        portable_impls.build_keras_vit_onnx,
        INFERENCE,
        ("fp32",),
        True,
        quick=False,
        exported=True,
    ),
    "keras-vit-openvino": Impl(
        openvino_impls.build_keras_vit_openvino,
        INFERENCE,
        ("fp32", "bf16", "int8"),
        True,
        exported=True,
    ),
    "keras-hub": Impl(keras_impls.build_keras_hub, ALL_TASKS, ("fp32",), False),
    "keras-hub-xla": Impl(
        functools.partial(keras_impls.build_keras_hub, jit_compile=True),
        ALL_TASKS,
        ("fp32",),
        False,
    ),
    "vit-keras": Impl(keras_impls.build_vit_keras, ALL_TASKS, ("fp32",), False),
    "hf-onnx": Impl(portable_impls.build_hf_onnx, INFERENCE, ("fp32",), False, exported=True),
    "openvino": Impl(
        openvino_impls.build_openvino, INFERENCE, ("fp32", "bf16", "int8"), False, exported=True
    ),
    "openvino-savedmodel": Impl(
        openvino_impls.build_openvino_savedmodel,
        INFERENCE,
        ("fp32", "bf16"),
        False,
        exported=True,
    ),
    "hf-torch": Impl(portable_impls.build_hf_torch, ALL_TASKS, ("fp32",), False, quick=False),
    "timm": Impl(portable_impls.build_timm, ALL_TASKS, ("fp32",), False),
    # Not implementations: each task's GEMM-only step (benchmarks/gemm_floor.py),
    # run in every sweep so that a floor meets the machine its rows met.
    "gemm-floor": Impl(gemm_floor.build_floor, ALL_TASKS, ("fp32", "bf16"), False),
    "gemm-floor+onednn": Impl(
        gemm_floor.build_floor, ALL_TASKS, ("fp32", "bf16"), False, env=ONEDNN_ON
    ),
    "gemm-floor-xla": Impl(
        functools.partial(gemm_floor.build_floor, runtime="xla"),
        INFERENCE,
        ("fp32", "bf16"),
        False,
        env=gemm_floor.XLA_ONE_AT_A_TIME,
    ),
    "gemm-floor-openvino": Impl(
        functools.partial(gemm_floor.build_floor, runtime="openvino"),
        INFERENCE,
        ("fp32", "bf16"),
        False,
    ),
}

#: The floor rows and the runtime whose GEMMs each one times (TensorFlow's
#: floor is the fastest of its kernel libraries, Eigen and oneDNN, and of
#: XLA's dots: what an in-process keras-vit path can run).
FLOORS = {
    "gemm-floor": "tensorflow",
    "gemm-floor+onednn": "tensorflow",
    "gemm-floor-xla": "tensorflow",
    "gemm-floor-openvino": "openvino",
}
