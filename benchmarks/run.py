"""Benchmarks keras-vit against its peers, in one run, one fresh process per job.

    python benchmarks/run.py --json benchmarks/results/cpu.json
    python benchmarks/run.py --quick

Tasks: ViT-B/16 224 inference at batch 1 (latency) and batch 16 (images/s),
ViT-S/16 224 training steps at batch 16 (Adam, images/s). Every job (one
implementation x task x precision) runs in its own subprocess, jobs of all
implementations are interleaved, and a full run repeats the sweep, every
other one in reverse order, so that load from other processes and the order
of the jobs hit everyone alike (``--no-floors`` leaves out the GEMM-only
floors: a head-to-head of the named implementations). On a shared machine the
fastest step is the one least disturbed, so rows report the best step of the
best sweep (``images_per_s``, ``latency_ms``) and keep the median step
(``median_ms``). A GEMM measured (best of 7) at the start and the end of the
run is the yardstick of achieved GFLOP/s. Ratios against the peers (the issue's
targets) are printed and written with the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make ``benchmarks`` importable

from benchmarks.environment import with_variables  # noqa: E402
from benchmarks.registry import FLOORS, IMPLS  # noqa: E402
from benchmarks.specs import TASKS  # noqa: E402
from benchmarks.targets import evaluate_targets, format_targets  # noqa: E402
from keras_vit.atomic import write_json_atomic  # noqa: E402

# (warm-up steps, minimum timed steps, minimum timed seconds, sweeps)
MODES = {"full": (2, 6, 10.0, 2), "quick": (1, 3, 3.0, 1)}
JOB_TIMEOUT_S = 1200
GEMM_PRECISIONS = ("fp32", "bf16")


def plan_jobs(impls, tasks, quick):
    """Job list ``(impl, task, precision)``, implementations interleaved per task."""
    jobs = []
    for task in tasks:
        for name, impl in IMPLS.items():
            if name not in impls or task not in impl.tasks or (quick and not impl.quick):
                continue
            jobs.extend((name, task, precision) for precision in impl.precisions)
    return jobs


def sweep_order(jobs, sweep):
    """The jobs of sweep number ``sweep`` (from 0): in plan order, reversed on odd sweeps.

    A fixed order gives each job the same neighbour in every sweep (OpenVINO's
    bf16 row always right after its fp32 row); alternating it spreads what a
    job inherits from the one before (caches, the VM's slow phases) over both
    sides of a ratio.
    """
    return list(jobs) if sweep % 2 == 0 else list(reversed(jobs))


def job_environment(env, base):
    """The environment of a job process: ``base`` with the job's ``(name, value)`` pairs.

    TensorFlow's logs quiet and Keras on TensorFlow; the pairs set as
    ``benchmarks.environment.with_variables`` does (flag lists extended).
    """
    return with_variables(env, {**base, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"})


def run_worker(args, timeout=JOB_TIMEOUT_S, module="benchmarks.worker", env=()):
    """Runs ``python -m module args`` in a fresh process; returns its ``RESULT`` row.

    ``env``: ``(name, value)`` pairs for the process environment (``job_environment``).
    """
    command = [sys.executable, "-m", module, *args]
    env = job_environment(env, os.environ)
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"status": f"error: timed out after {timeout} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
    return {"status": f"error: exit {done.returncode}: {tail}"}


def prepare_exports(jobs, workdir):
    """Writes every exported model once, in its own process, before timing."""
    for impl, task, precision in jobs:
        if IMPLS[impl].exported and task == "infer_b1":
            print(f"[prepare] {impl} {precision}", flush=True)
            run_worker(
                [
                    "--impl",
                    impl,
                    "--task",
                    task,
                    "--precision",
                    precision,
                    "--workdir",
                    workdir,
                    "--prepare-only",
                ],
                env=IMPLS[impl].env,
            )


def measure_gemms():
    """``{precision: GFLOP/s}`` of the GEMM, each in a fresh process."""
    return {
        precision: run_worker(["--impl", "gemm", "--precision", precision]).get("gflops")
        for precision in GEMM_PRECISIONS
    }


def with_floors(impls):
    """``impls`` plus a run's GEMM-only floors: TensorFlow's, and OpenVINO's with OpenVINO rows."""
    floors = [
        floor
        for floor, runtime in FLOORS.items()
        if runtime == "tensorflow" or any(runtime in impl for impl in impls)
    ]
    return [*impls, *(floor for floor in floors if floor not in impls)]


def floors_of(rows):
    """Floor rows by ``"task precision"`` (TensorFlow's) or ``"task precision openvino"``.

    A runtime with several floor rows (TensorFlow with and without oneDNN)
    gets the fastest that ran.
    """
    floors = {}
    for row in rows:
        runtime = FLOORS.get(row["impl"])
        if runtime:
            suffix = "" if runtime == "tensorflow" else f" {runtime}"
            key = f"{row['task']} {row['precision']}{suffix}"
            if key not in floors or _faster(row, floors[key]):
                floors[key] = row
    return floors


def _faster(row, other):
    """Whether ``row`` ran and beat ``other`` (or ``other`` did not run)."""
    if row["status"] != "ok":
        return False
    return other["status"] != "ok" or row["images_per_s"] > other["images_per_s"]


def merge_runs(runs, gemm):
    """One row per job: the best sweep, plus the fraction of the GEMM rate."""
    rows = {}
    for run in runs:
        rows.setdefault((run["impl"], run["task"], run["precision"]), []).append(run)
    merged = []
    for sweeps in rows.values():
        ok = [r for r in sweeps if r["status"] == "ok"]
        row = dict(sweeps[0] if not ok else ok[0])
        if ok:
            row = dict(max(ok, key=lambda r: r["images_per_s"]))
            row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
            row["sweeps"] = len(ok)
            rate = gemm.get(row["precision"])
            row["gemm_fraction"] = round(row["gflops"] / rate, 3) if rate else None
        merged.append(row)
    return merged


def format_table(rows):
    """Plain-text table of the merged rows."""
    header = (
        f"{'impl':26} {'task':9} {'prec':4} {'img/s':>7} {'ms':>8} {'RSS MB':>7} "
        f"{'GFLOP/s':>7} {'%GEMM':>5}  status"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        if r["status"] != "ok":
            lines.append(
                f"{r['impl']:26} {r['task']:9} {r['precision']:4} "
                f"{'':>7} {'':>8} {'':>7} {'':>7} {'':>5}  {r['status']}"
            )
            continue
        share = "" if r.get("gemm_fraction") is None else f"{100 * r['gemm_fraction']:.0f}"
        ran = f" (computes in {r['computes_in']})" if "computes_in" in r else ""
        lines.append(
            f"{r['impl']:26} {r['task']:9} {r['precision']:4} {r['images_per_s']:7.2f} "
            f"{r['latency_ms']:8.1f} {r['peak_rss_mb']:7.0f} {r['gflops']:7.1f} {share:>5}  ok{ran}"
        )
    return "\n".join(lines)


def machine():
    """Short description of the machine and load the run saw."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(
                line.split(":", 1)[1].strip() for line in file if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return dict(
        cpu=cpu,
        isa=instruction_sets(),
        cores=os.cpu_count(),
        python=platform.python_version(),
        load_average_start=os.getloadavg(),
    )


#: The CPU features that decide which kernels run (AVX2 only: no native bf16).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def instruction_sets(cpuinfo="/proc/cpuinfo"):
    """Those of ``ISA_FLAGS`` this CPU has (empty where ``cpuinfo`` cannot be read)."""
    try:
        with open(cpuinfo) as file:
            flags = next(line.split(":", 1)[1].split() for line in file if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return [flag for flag in ISA_FLAGS if flag in flags]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write rows, GEMM rates and ratios to this file")
    parser.add_argument(
        "--quick", action="store_true", help="short timings, one sweep, fewer peers"
    )
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--sweeps", type=int, help="repetitions of the whole sweep")
    parser.add_argument("--workdir", help="folder for exported models (default: temporary)")
    parser.add_argument(
        "--no-floors",
        action="store_true",
        help="leave out the GEMM-only floor rows (a head-to-head of the named impls)",
    )
    args = parser.parse_args(argv)
    if args.sweeps is not None and args.sweeps < 1:
        parser.error(f"--sweeps must be at least 1, got {args.sweeps}")
    warmup, min_steps, min_time, sweeps = MODES["quick" if args.quick else "full"]
    sweeps = args.sweeps or sweeps
    workdir = args.workdir or tempfile.mkdtemp(prefix="keras_vit_bench_")
    info = machine()
    impls = args.impls if args.no_floors else with_floors(args.impls)
    jobs = plan_jobs(impls, args.tasks, args.quick)
    started = time.time()
    gemm_runs = [measure_gemms()]
    runs = []
    try:
        prepare_exports(jobs, workdir)
        for sweep in range(sweeps):
            for number, (impl, task, precision) in enumerate(sweep_order(jobs, sweep), 1):
                print(
                    f"[sweep {sweep + 1}/{sweeps} job {number}/{len(jobs)}] "
                    f"{impl} {task} {precision}",
                    flush=True,
                )
                row = run_worker(
                    [
                        "--impl",
                        impl,
                        "--task",
                        task,
                        "--precision",
                        precision,
                        "--workdir",
                        workdir,
                        "--warmup",
                        str(warmup),
                        "--min-steps",
                        str(min_steps),
                        "--min-time",
                        str(min_time),
                    ],
                    env=IMPLS[impl].env,
                )
                variant, batch, _ = TASKS[task]
                runs.append(
                    {
                        "sweep": sweep + 1,
                        "impl": impl,
                        "model": f"ViT-{variant}",
                        "task": task,
                        "precision": precision,
                        "batch": batch,
                        **row,
                    }
                )
        gemm_runs.append(measure_gemms())
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    gemm = {
        p: max(g[p] for g in gemm_runs if g[p])
        for p in GEMM_PRECISIONS
        if any(g[p] for g in gemm_runs)
    }
    rows = merge_runs(runs, gemm)
    floors = floors_of(rows)
    targets = evaluate_targets(rows, floors)
    info.update(load_average_end=os.getloadavg(), minutes=round((time.time() - started) / 60, 1))
    print(f"\nGEMM GFLOP/s (best of start/end): {gemm}  machine: {info}\n")
    print(format_table(rows))
    print(
        "\nGEMM-only floor (benchmarks/gemm_floor.py; 'openvino': OpenVINO's GEMMs): "
        + ", ".join(f"{key} {row.get('images_per_s')} img/s" for key, row in floors.items())
    )
    print("\n" + format_targets(targets))
    if args.json:
        result = dict(
            machine=info,
            mode="quick" if args.quick else "full",
            gemm_gflops=gemm,
            gemm_runs=gemm_runs,
            floors=floors,
            rows=rows,
            runs=runs,
            targets=targets,
        )
        write_json_atomic(result, args.json, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
