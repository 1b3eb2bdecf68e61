"""benchmarks/run.py alternates the order of its sweeps and can leave the floors out."""

import json

import pytest

from benchmarks import run
from benchmarks.registry import FLOORS


def test_odd_sweeps_run_the_jobs_in_reverse():
    jobs = [("a", "infer_b1", "fp32"), ("b", "infer_b1", "fp32"), ("b", "infer_b16", "bf16")]
    assert run.sweep_order(jobs, 0) == jobs
    assert run.sweep_order(jobs, 1) == jobs[::-1]
    assert run.sweep_order(jobs, 2) == jobs


def _fake_worker(calls):
    def run_worker(args, env=()):
        impl, task, precision = (
            args[args.index(flag) + 1] for flag in ("--impl", "--task", "--precision")
        )
        calls.append((impl, task, precision))
        latency = 100.0 + len(calls)
        return dict(
            status="ok",
            steps=3,
            images_per_s=1000.0 / latency,
            latency_ms=latency,
            median_ms=latency,
            peak_rss_mb=1.0,
            gflops=1.0,
        )

    return run_worker


def _main(monkeypatch, tmp_path, *extra):
    calls = []
    monkeypatch.setattr(run, "run_worker", _fake_worker(calls))
    monkeypatch.setattr(run, "measure_gemms", lambda: {"fp32": 1.0, "bf16": 1.0})
    monkeypatch.setattr(run, "prepare_exports", lambda jobs, workdir: None)
    out = tmp_path / "run.json"
    argv = ["--impls", "keras-vit-frozen", "openvino", "--tasks", "infer_b1", "--sweeps", "2"]
    assert run.main([*argv, "--workdir", str(tmp_path), "--json", str(out), *extra]) == 0
    return calls, json.loads(out.read_text())


def test_a_run_alternates_its_sweeps_and_records_them(monkeypatch, tmp_path):
    calls, result = _main(monkeypatch, tmp_path)
    first, second = calls[: len(calls) // 2], calls[len(calls) // 2 :]
    assert second == first[::-1]
    assert any(impl in FLOORS for impl, *_ in first)
    assert [r["sweep"] for r in result["runs"]] == [1] * len(first) + [2] * len(second)
    assert [r["impl"] for r in result["runs"]] == [impl for impl, *_ in calls]


def test_no_floors_runs_only_the_named_impls(monkeypatch, tmp_path):
    calls, result = _main(monkeypatch, tmp_path, "--no-floors")
    assert {impl for impl, *_ in calls} == {"keras-vit-frozen", "openvino"}
    assert result["floors"] == {}
    assert any(t["target"].startswith("fp32 infer B/16 b1 latency") for t in result["targets"])


@pytest.mark.parametrize("sweeps", ["0", "-1"])
def test_a_run_of_no_sweeps_is_refused(sweeps, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--sweeps", sweeps, "--no-floors", "--impls", "openvino"])
    assert exit_info.value.code == 2
    assert f"--sweeps must be at least 1, got {sweeps}" in capsys.readouterr().err


def test_a_job_adds_its_xla_flags_to_the_users_own():
    base = {"XLA_FLAGS": "--xla_dump_to=/tmp/dump", "TF_ENABLE_ONEDNN_OPTS": "0", "HOME": "/h"}
    env = run.job_environment(
        (("XLA_FLAGS", "--xla_cpu_fast"), ("TF_ENABLE_ONEDNN_OPTS", "1")), base
    )
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/dump --xla_cpu_fast"
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "1"  # not a flag list: the job's value
    assert env["HOME"] == "/h" and env["KERAS_BACKEND"] == "tensorflow"
    assert run.job_environment((("XLA_FLAGS", "--xla_cpu_fast"),), {})["XLA_FLAGS"] == (
        "--xla_cpu_fast"
    )


def test_a_job_environment_applied_twice_is_the_same():
    job = (("XLA_FLAGS", "--xla_cpu_fast"),)
    once = run.job_environment(job, {"XLA_FLAGS": "--xla_dump_to=/tmp/dump"})
    assert run.job_environment(job, once) == once
