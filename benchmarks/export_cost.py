"""Peak memory and wall time of ``keras-vit export``, format by format, model by model.

    python benchmarks/export_cost.py --json benchmarks/results/export_cost.json
    python benchmarks/export_cost.py --models Ti/16            # quick check, about 3 min

Every export is ``keras-vit export --model VARIANT --format FORMAT`` (random
weights, the SavedModel always written as in every export, then the parity
check of every artifact) in a fresh process, one after the other. Peak memory
is the process's own maximum resident set (``wait4``'s ``ru_maxrss``, what
``/usr/bin/time -v`` reports); the export runs in one process, its converters
included. The ``ratio`` column is each row's peak over the same model's
``saved_model`` row: the issue's target is <= 2x for every format.

Formats: ``saved_model``, ``tflite``, ``onnx``, ``openvino`` and ``all`` (the
four in one export). Models default to ViT-Ti/16, B/16 and L/16.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script

from benchmarks.report import print_and_save  # noqa: E402

MODELS = ("Ti/16", "B/16", "L/16")
FORMATS = {
    "saved_model": "saved_model",
    "tflite": "tflite",
    "onnx": "onnx",
    "openvino": "openvino",
    "all": "saved_model,tflite,onnx,openvino",
}
TIMEOUT_S = 3600


def measure(variant, formats, workdir, timeout=TIMEOUT_S):
    """Runs one export in a fresh process.

    Returns:
        dict ``peak_rss_mb``, ``wall_s``, ``status`` (``"ok"`` or the error's
        last line).
    """
    output = tempfile.mkdtemp(prefix="export-", dir=workdir)
    command = [
        sys.executable,
        "-m",
        "keras_vit_cli",
        "export",
        "--model",
        variant,
        "--format",
        formats,
        "--output",
        output,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        deadline = start + timeout
        while True:  # wait4: the rusage of this child alone
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.2)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        log.seek(0)
        tail = (log.read().strip().splitlines() or ["no output"])[-1][:200]
    ok = process.returncode == 0
    return dict(
        peak_rss_mb=round(usage.ru_maxrss / 1024.0, 1),
        wall_s=round(wall, 1),
        status="ok" if ok else f"error: exit {process.returncode}: {tail}",
    )


def format_table(rows):
    """Plain-text table, one row per model and format."""
    header = (
        f"{'model':8} {'format':12} {'peak RSS MB':>11} {'x SavedModel':>12} {'wall s':>7}  status"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.2f}"
        lines.append(
            f"{r['model']:8} {r['format']:12} {r['peak_rss_mb']:11.0f} {ratio:>12} "
            f"{r['wall_s']:7.1f}  {r['status']}"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="variants (Ti/16 ...)")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    rows = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="keras_vit_export_cost_") as workdir:
        for variant in args.models:
            baseline = None
            for name in ("saved_model", *[f for f in args.formats if f != "saved_model"]):
                print(f"[{variant}] {name}", flush=True)
                row = dict(model=variant, format=name, **measure(variant, FORMATS[name], workdir))
                if name == "saved_model" and row["status"] == "ok":
                    baseline = row["peak_rss_mb"]
                ok = baseline and row["status"] == "ok"
                row["ratio"] = round(row["peak_rss_mb"] / baseline, 2) if ok else None
                rows.append(row)
                print("  " + format_table([row]).splitlines()[-1], flush=True)
    print_and_save(rows, format_table(rows), args.json, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
