"""Runs one benchmark job in this (fresh) process and prints its result row.

    python -m benchmarks.worker --impl keras-vit --task infer_b16 --precision fp32

The last stdout line is ``RESULT <json>``: the row of ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def time_steps(step, warmup, min_steps, min_time):
    """Runs ``warmup`` untimed steps, then at least ``min_steps`` and ``min_time`` s.

    Returns:
        list of per-step wall times in seconds.
    """
    for _ in range(warmup):
        step()
    times = []
    start = time.perf_counter()
    while len(times) < min_steps or time.perf_counter() - start < min_time:
        begin = time.perf_counter()
        step()
        times.append(time.perf_counter() - begin)
    return times


def failure_reason(error):
    """One line naming why an implementation could not run: ``"Type: message"``, 200 chars."""
    return f"{type(error).__name__}: {error}".splitlines()[0][:200]


def peak_rss_mb():
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_gemm(precision):
    """The GEMM row: ``task="gemm"`` with the matmul rate in ``gflops``."""
    from benchmarks.gemm import GEMM_SIZE, measure_gemm

    return dict(
        impl="gemm",
        model=f"matmul {GEMM_SIZE}^3",
        task="gemm",
        precision=precision,
        status="ok",
        gflops=round(measure_gemm(precision), 1),
    )


def run_job(impl, task, precision, workdir, warmup, min_steps, min_time, prepare_only=False):
    """Builds one implementation and times it; returns the result row.

    An implementation that cannot be built here (not installed, not
    importable, incompatible) gives ``status="not runnable: <reason>"``.
    With ``prepare_only`` the implementation is built (exported files
    written to ``workdir``) and nothing is timed.
    """
    from benchmarks.registry import IMPLS
    from benchmarks.specs import TASKS, task_flops

    variant, batch, _ = TASKS[task]
    row = dict(impl=impl, model=f"ViT-{variant}", task=task, precision=precision, batch=batch)
    try:
        step = IMPLS[impl].builder(task, precision, workdir)
        step()
    except Exception as err:  # any failure of a third-party stack is reported
        row.update(status=f"not runnable: {failure_reason(err)}")
        return row
    if prepare_only:
        row.update(status="prepared")
        return row
    times = time_steps(step, warmup, min_steps, min_time)
    best, median = min(times), statistics.median(times)
    row.update(
        status="ok",
        steps=len(times),
        images_per_s=round(batch / best, 3),
        latency_ms=round(best * 1000.0, 2),
        median_ms=round(median * 1000.0, 2),
        peak_rss_mb=round(peak_rss_mb(), 1),
        gflops=round(batch / best * task_flops(task) / 1e9, 1),
    )
    if hasattr(step, "computes_in"):  # the runtime ran another precision than asked
        row["computes_in"] = step.computes_in
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", required=True)
    parser.add_argument("--task", default="gemm")
    parser.add_argument("--precision", required=True)
    parser.add_argument("--workdir", default=".")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--min-steps", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=10.0)
    parser.add_argument("--prepare-only", action="store_true", help="build/export, time nothing")
    args = parser.parse_args(argv)
    if args.impl == "gemm":
        row = run_gemm(args.precision)
    else:
        row = run_job(
            args.impl,
            args.task,
            args.precision,
            args.workdir,
            args.warmup,
            args.min_steps,
            args.min_time,
            args.prepare_only,
        )
    print("RESULT " + json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
