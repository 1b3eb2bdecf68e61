"""Benchmark rows say which precision really ran, and on which instruction sets.

OpenVINO's precision hint is a request: a CPU without bf16 instructions runs
a bf16-hinted model in f32. A row that still said "bf16" would compare
keras-vit's bf16 with OpenVINO's fp32 under one name.
"""

import numpy as np
import pytest

from benchmarks import gemm_floor, targets, worker
from benchmarks.openvino_impls import marked_with_precision
from benchmarks.registry import IMPLS, Impl
from benchmarks.run import ISA_FLAGS, format_table, instruction_sets


def _kernel_precisions(compiled):
    """The runtime precisions of the plugin's MatMul kernels: its own graph, not its property."""
    return {
        rt["runtimePrecision"].astype(str)
        for rt in (op.get_rt_info() for op in compiled.get_runtime_model().get_ops())
        if rt["layerType"].astype(str) == "FullyConnected"
    }


def _compiled_model(hint):
    """A small MLP (MatMul, GELU, MatMul, softmax) compiled for the CPU with ``hint``."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([2, 5, 16], np.float32)
    rng = np.random.default_rng(0)
    hidden = ops.matmul(x, ops.constant(rng.standard_normal((16, 32), dtype="float32")), 0, 0)
    logits = ops.matmul(
        ops.gelu(hidden, "erf"), ops.constant(rng.standard_normal((32, 8), "float32")), 0, 0
    )
    model = ov.Model([ops.softmax(logits, -1)], [x])
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})


@pytest.mark.parametrize("precision, hint", [("fp32", "f32"), ("bf16", "bf16")])
def test_an_openvino_step_is_marked_when_the_plugin_runs_another_precision(precision, hint):
    compiled = _compiled_model(hint)
    step = marked_with_precision(lambda: None, compiled, precision)
    (ran,) = _kernel_precisions(compiled)
    ran = {"f32": "fp32", "bf16": "bf16"}[ran]
    assert getattr(step, "computes_in", precision) == ran
    assert (ran == precision) == (not hasattr(step, "computes_in"))


def _runtime_layers(compiled):
    """The plugin's compiled graph: each layer's type, kernel and runtime precision, in order."""
    return [
        tuple(str(rt[key]) for key in ("layerType", "primitiveType", "runtimePrecision"))
        for rt in (op.get_rt_info() for op in compiled.get_runtime_model().get_ordered_ops())
    ]


def test_a_row_marked_fp32_runs_the_fp32_program():
    # Why a target counts a row for the precision it computed in: where the
    # bf16 hint is marked as computing in fp32, its compiled graph is the f32
    # hint's, layer for layer; where the CPU has bf16, it is not marked.
    f32, bf16 = _compiled_model("f32"), _compiled_model("bf16")
    marked = getattr(marked_with_precision(lambda: None, bf16, "bf16"), "computes_in", None)
    assert marked in (None, "fp32")
    assert (_runtime_layers(f32) == _runtime_layers(bf16)) == (marked == "fp32")


def test_a_target_counts_a_row_for_the_precision_it_computed_in():
    rows = [
        _row("keras-vit-frozen", "fp32", 220.0),
        _row("openvino", "fp32", 240.0),
        _row("openvino", "bf16", 230.0, computes_in="fp32"),
    ]
    results = {r["target"]: r for r in targets.evaluate_targets(rows)}
    fp32 = results["fp32 infer B/16 b1 latency: keras-vit in-process vs OpenVINO"]
    assert fp32["ratio"] == pytest.approx(230.0 / 220.0, abs=1e-3)
    assert fp32["theirs"] == "openvino (bf16 hint) 230.0"
    assert fp32["computes_in"] == {}
    # A bf16 row that computed in bf16 is not an fp32 measurement.
    rows[2] = _row("openvino", "bf16", 120.0)
    results = {r["target"]: r for r in targets.evaluate_targets(rows)}
    fp32 = results["fp32 infer B/16 b1 latency: keras-vit in-process vs OpenVINO"]
    assert fp32["ratio"] == pytest.approx(240.0 / 220.0, abs=1e-3)
    assert fp32["theirs"] == "openvino 240.0"


def test_an_int8_step_is_never_marked():
    step = marked_with_precision(lambda: None, _compiled_model("f32"), "int8")
    assert not hasattr(step, "computes_in")


def test_the_openvino_floor_is_marked_like_the_rows():
    program = gemm_floor.openvino_program([(1, 4, 8, 3)], "bf16")
    compiled = _compiled_model("bf16")
    assert getattr(program, "computes_in", "bf16") == getattr(
        marked_with_precision(lambda: None, compiled, "bf16"), "computes_in", "bf16"
    )


def _fake_impl(monkeypatch, computes_in):
    def build(task, precision, workdir):
        def step():
            return None

        if computes_in:
            step.computes_in = computes_in
        return step

    monkeypatch.setitem(IMPLS, "fake", Impl(build, ("infer_b1",), ("bf16",), False))


@pytest.mark.parametrize("computes_in", [None, "fp32"])
def test_a_row_carries_the_precision_that_ran(monkeypatch, computes_in):
    _fake_impl(monkeypatch, computes_in)
    row = worker.run_job("fake", "infer_b1", "bf16", ".", 0, 1, 0.0)
    assert row["status"] == "ok" and row["precision"] == "bf16"
    assert row.get("computes_in") == computes_in
    table = format_table([{**row, "peak_rss_mb": 1.0}])
    assert ("computes in fp32" in table) == (computes_in == "fp32")


def test_a_job_that_cannot_be_built_is_a_row_saying_why(monkeypatch):
    def build(task, precision, workdir):
        raise ImportError("No module named 'openvino'\nmore detail")

    monkeypatch.setitem(IMPLS, "fake", Impl(build, ("infer_b1",), ("bf16",), False))
    row = worker.run_job("fake", "infer_b1", "bf16", ".", 0, 1, 0.0)
    assert row["status"] == "not runnable: ImportError: No module named 'openvino'"


def _row(impl, precision, latency, **extra):
    return dict(
        impl=impl,
        task="infer_b1",
        precision=precision,
        status="ok",
        latency_ms=latency,
        images_per_s=1000.0 / latency,
        **extra,
    )


def test_a_target_names_the_side_that_ran_another_precision():
    rows = [
        _row("keras-vit-frozen", "bf16", 400.0),
        _row("openvino", "bf16", 250.0, computes_in="fp32"),
        _row("keras-vit-openvino", "bf16", 260.0, computes_in="fp32"),
    ]
    results = {r["target"]: r for r in targets.evaluate_targets(rows)}
    in_process = results["bf16 infer B/16 b1 latency: keras-vit in-process vs OpenVINO"]
    assert in_process["computes_in"] == {"theirs": "fp32"}
    assert in_process["ratio"] == pytest.approx(250.0 / 400.0, abs=1e-3)
    export = results["bf16 infer B/16 b1 latency: keras-vit's OpenVINO export vs OpenVINO's own"]
    assert export["computes_in"] == {"ours": "fp32", "theirs": "fp32"}
    text = targets.format_targets([in_process])
    assert "theirs computed in fp32" in text and "ours computed" not in text


def test_instruction_sets_reads_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n"
    )
    assert instruction_sets(cpuinfo) == ["avx2"]
    cpuinfo.write_text("flags\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert instruction_sets(cpuinfo) == ["avx2", "avx512f", "avx512_bf16", "amx_bf16"]
    assert instruction_sets(tmp_path / "missing") == []
    assert set(instruction_sets()) <= set(ISA_FLAGS)


def test_every_in_process_keras_vit_row_counts_as_keras_vit_in_process():
    # An in-process row missing from OURS (keras-vit-frozen+onednn was) is never a target side.
    in_process = {name for name, impl in IMPLS.items() if impl.ours and not impl.exported}
    assert in_process == set(targets.OURS)
