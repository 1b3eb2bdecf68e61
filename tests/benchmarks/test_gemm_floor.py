"""The GEMM-only floor of benchmarks/gemm_floor.py runs every product of a step, once each."""

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from benchmarks import gemm_floor
from benchmarks.registry import IMPLS
from benchmarks.run import floors_of, with_floors
from benchmarks.specs import TASKS, model_spec

# Three batched and three 2-D products of one shape each: identical computations
# if their operands were shared.
SAME_SHAPE = [(2, 5, 4, 3)] * 3 + [(1, 5, 4, 3)] * 3
CORNERS = 3 * 2 + 3  # TensorFlow: one per batch entry of every product


def test_program_order_lists_every_product_layer_by_layer():
    gemms = gemm_floor.step_gemms("infer_b1")
    products = gemm_floor.program_order(gemms)
    assert len(products) == sum(count for *_, count in gemms)
    layers = model_spec(TASKS["infer_b1"][0])["num_layers"]
    per_layer = [g for g in gemms if g[-1] == layers - 1]  # the last block is a one-off
    # Layer 0 holds the one-off products too; every later layer repeats the same sequence.
    assert products[-len(per_layer) :] == [tuple(g[1:5]) for g in per_layer]


def _graph_products(graph):
    """``(batch, m, k, n)`` of every MatMul and BatchMatMulV2 of a graph."""
    products = []
    for op in graph.get_operations():
        if op.type in ("MatMul", "BatchMatMulV2"):
            (*batch, m, k), (*_, n) = (tuple(tensor.shape) for tensor in op.inputs)
            products.append((int(np.prod(batch)), m, k, n))
    return products


def test_the_floor_runs_the_products_of_keras_vit_s_forward_pass():
    """The model's traced graph, not the floor's own arithmetic, says which products a step has."""
    import tensorflow as tf

    from benchmarks.keras_impls import random_batch
    from keras_vit.model.factories import build_variant

    variant, batch, _ = TASKS["infer_b1"]
    model = build_variant(variant, image_size=model_spec(variant)["image_size"])
    images, _ = random_batch("infer_b1")
    forward = tf.function(lambda x: model(x, training=False), autograph=False)
    graph = forward.get_concrete_function(tf.TensorSpec(images.shape, tf.float32)).graph
    expected = Counter(_graph_products(graph))
    floor = Counter(gemm_floor.program_order(gemm_floor.step_gemms("infer_b1")))
    assert floor == expected
    assert (batch * 12, 1, 64, 197) in floor  # the last block's one query row per head


@pytest.mark.parametrize("constant_weights, xla", [(False, False), (True, False), (True, True)])
def test_tensorflow_program_runs_each_product_on_its_own_operands(constant_weights, xla):
    corners = gemm_floor.tensorflow_program(SAME_SHAPE, "fp32", constant_weights, xla=xla)()
    assert corners.shape == (CORNERS,)
    # Shared operands would give three equal products (and Grappler would run one).
    assert len(np.unique(corners)) == corners.size


def test_tensorflow_program_runs_each_dense_form_where_asked():
    # A bias only where asked; the convolution is the biased product's sum
    # (same operands, same bias), its corner equal to float32 rounding.
    products = [(1, 6, 4, 3)]
    corners = {
        form: gemm_floor.tensorflow_program(products, "fp32", True, {(6, 4, 3): form})()
        for form in gemm_floor.DENSE_FORMS
    }
    assert gemm_floor.tensorflow_program(products, "fp32", True)() == corners["bare"]
    assert all(corner.shape == (1,) for corner in corners.values())
    assert corners["bare"][0] != corners["biased"][0]
    np.testing.assert_allclose(corners["convolution"], corners["biased"], rtol=1e-5)


def test_fastest_forms_picks_each_shape_s_fastest_form():
    times = {
        (6, 4, 3): {"bare": 2.0, "biased": 1.0, "convolution": 3.0},
        (1, 2, 3): {"bare": 1.0, "biased": 2.0, "convolution": 0.5},
    }
    assert gemm_floor.fastest_forms(times) == {(6, 4, 3): "biased", (1, 2, 3): "convolution"}


def test_openvino_program_runs_each_product_on_its_own_operands():
    pytest.importorskip("openvino")
    result = gemm_floor.openvino_program(SAME_SHAPE, "fp32")()
    (corners,) = result.values()
    assert corners.shape == (len(SAME_SHAPE),)  # one per product
    assert len(np.unique(corners)) == corners.size


@pytest.mark.parametrize(
    "task, precision, runtime, message",
    [
        ("infer_b1", "fp32", "torch", "runtime must be one of"),
        ("infer_b1", "int8", "tensorflow", "precision must be one of"),
        ("train", "fp32", "openvino", "inference only"),
        ("train", "fp32", "xla", "inference only"),
    ],
)
def test_floor_step_refuses_what_it_cannot_time(task, precision, runtime, message):
    with pytest.raises(ValueError, match=message):
        gemm_floor.floor_step(task, precision, runtime)


def test_run_adds_the_floors_its_rows_are_compared_with():
    tensorflow = ["gemm-floor", "gemm-floor+onednn", "gemm-floor-xla"]  # Eigen, oneDNN, XLA
    assert with_floors(["keras-vit-frozen"]) == ["keras-vit-frozen", *tensorflow]
    assert with_floors(["openvino", "gemm-floor"]) == [
        "openvino",
        *tensorflow,
        "gemm-floor-openvino",
    ]
    rows = [
        {"impl": "gemm-floor", "task": "infer_b1", "precision": "bf16"},
        {"impl": "gemm-floor-openvino", "task": "infer_b1", "precision": "bf16"},
        {"impl": "openvino", "task": "infer_b1", "precision": "bf16"},
    ]
    assert floors_of(rows) == {"infer_b1 bf16": rows[0], "infer_b1 bf16 openvino": rows[1]}


@pytest.mark.parametrize("eigen, onednn, faster", [(2.0, 3.0, 1), (3.0, 2.0, 0), (None, 2.0, 1)])
def test_tensorflow_s_floor_is_the_faster_of_its_kernel_libraries(eigen, onednn, faster):
    rows = [
        {"impl": impl, "task": "infer_b16", "precision": "fp32", "status": "ok", "images_per_s": v}
        if v is not None
        else {"impl": impl, "task": "infer_b16", "precision": "fp32", "status": "error: x"}
        for impl, v in (("gemm-floor", eigen), ("gemm-floor+onednn", onednn))
    ]
    assert floors_of(rows)["infer_b16 fp32"] is rows[faster]
    assert floors_of(rows[::-1])["infer_b16 fp32"] is rows[faster]


XLA_FLOOR_SCRIPT = """
from benchmarks import gemm_floor
products = [(1, 64, 32, 48)] * 3 + [(2, 16, 8, 16)] * 2
gemm_floor.tensorflow_program(products, "fp32", True, xla=True)()
"""


def _entry_schedule(dump_dir):
    """The floor program's optimised entry computation, one instruction per line, in order."""
    (module,) = dump_dir.glob("*inference_program*cpu_after_optimizations.txt")
    text = module.read_text()
    entry = text[text.index("\nENTRY ") :].splitlines()[1:]
    return [line.split(", metadata=")[0] for line in entry if " = " in line]


@pytest.mark.slow  # a fresh process: XLA reads its flags once
def test_xla_floor_runs_its_products_one_at_a_time(tmp_path):
    """Each product's result is used before the next product runs.

    XLA's default schedule ran the independent products first, all their
    results alive at once.
    """
    (name, flags), *_ = gemm_floor.XLA_ONE_AT_A_TIME
    env = {**os.environ, name: f"{flags} --xla_dump_to={tmp_path}", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", XLA_FLOOR_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(gemm_floor.__file__).parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    schedule = _entry_schedule(tmp_path)
    dots = [i for i, line in enumerate(schedule) if " dot(" in line]
    assert len(dots) == 5
    for dot, following in zip(dots, dots[1:]):
        result = schedule[dot].split(" = ")[0].strip()
        used = [
            line
            for line in schedule[dot + 1 : following]
            if f"{result}," in line or f"{result})" in line
        ]
        assert used, f"{result} is not used before the next product:\n" + "\n".join(schedule)


def test_the_xla_floor_row_and_command_run_one_product_at_a_time(monkeypatch, capsys):
    assert IMPLS["gemm-floor-xla"].env == gemm_floor.XLA_ONE_AT_A_TIME
    (name, flag), *_ = gemm_floor.XLA_ONE_AT_A_TIME
    monkeypatch.setenv(name, "--xla_cpu_use_thunk_runtime=true")  # a user's own flags stay
    floor = dict(rows=[], optimizer_ms=0.0, step_ms=1.0, images_per_s=1.0)
    monkeypatch.setattr(gemm_floor, "gemm_floor", lambda *args: floor)  # not timed here
    gemm_floor.main(["--runtime", "xla", "--task", "infer_b1", "--precision", "fp32"])
    assert os.environ[name] == f"--xla_cpu_use_thunk_runtime=true {flag}"
    assert "infer_b1" in capsys.readouterr().out
