"""Resident memory of a frozen model, stage by stage, against the Keras model it came from.

    python benchmarks/freeze_memory.py --json benchmarks/results/freeze_memory.json
    python benchmarks/freeze_memory.py --models Ti/16 --policies float32   # quick check

Each row is a fresh process (random weights) that builds the model, then
either runs it (``keras model``: ``predict_on_batch``, the baseline) or
freezes it and calls the frozen model twice on one image. Memory is the
process's resident set (``VmRSS``) after each stage and its peak
(``ru_maxrss``) at the end. ``freeze`` returns the heap that the first call
frees to the system (``keras_vit.memory.release_memory``); the ``freeze,
no release`` rows run the same with that step disabled, which is what the
frozen model did before. ``x Keras`` is each row's resident memory after the
calls over the Keras model's in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script

from benchmarks.report import print_and_save  # noqa: E402

MODELS = ("B/16",)
POLICIES = ("float32", "mixed_bfloat16", "bfloat16")
MODES = ("keras model", "freeze", "freeze, no release")
TIMEOUT_S = 1800


def resident_mb():
    """This process's resident set in MB (``VmRSS``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0)
    raise RuntimeError("no VmRSS in /proc/self/status")


def worker(variant, policy, mode, jit_compile):
    """One row, measured in this process: ``{stage: resident MB}`` and the peak."""
    import keras
    import numpy as np

    import keras_vit
    from benchmarks.worker import peak_rss_mb
    from keras_vit.model import frozen as frozen_module
    from keras_vit.model.factories import build_variant

    if mode == "freeze, no release":
        frozen_module.release_memory = lambda: None
    keras.config.set_dtype_policy(policy)
    model = build_variant(variant)
    size = model.image_size[0]
    images = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype("float32")
    stages = {"model": resident_mb()}
    if mode == "keras model":
        run = model.predict_on_batch
    else:
        run = keras_vit.freeze(model, jit_compile=jit_compile, batch_size=1)
        stages["frozen"] = resident_mb()
    for call in ("call 1", "call 2"):
        np.asarray(run(images))
        stages[call] = resident_mb()
    return dict(stages=stages, peak_mb=round(peak_rss_mb()))


def measure(variant, policy, mode, jit_compile):
    """Runs ``worker`` in a fresh process; its row, or ``status`` with the error."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        json.dumps([variant, policy, mode, jit_compile]),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return dict(status=f"error: exit {done.returncode}: {tail}")
    return dict(json.loads(lines[-1]), status="ok")


def format_table(rows):
    """Plain-text table, one row per model, policy, path and mode."""
    header = (
        f"{'model':6} {'policy':15} {'path':5} {'mode':19} {'model MB':>8} {'frozen MB':>9} "
        f"{'call 1 MB':>9} {'call 2 MB':>9} {'peak MB':>8} {'x Keras':>7}  status"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        stages = r.get("stages", {})
        cells = [
            f"{stages[k]:>{w}}" if k in stages else " " * w
            for k, w in (("model", 8), ("frozen", 9), ("call 1", 9), ("call 2", 9))
        ]
        peak = f"{r['peak_mb']:8}" if "peak_mb" in r else " " * 8
        ratio = f"{r['ratio']:7.2f}" if r.get("ratio") else " " * 7
        lines.append(
            f"{r['model']:6} {r['policy']:15} {r['path']:5} {r['mode']:19} {' '.join(cells)} "
            f"{peak} {ratio}  {r['status']}"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="variants (B/16 ...)")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument(
        "--xla", action="store_true", help="also freeze with jit_compile=True (float32 only)"
    )
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*json.loads(args.worker))))
        return 0
    rows, started = [], time.time()
    for variant in args.models:
        for policy in args.policies:
            paths = [("graph", False)] + (
                [("XLA", True)] if args.xla and policy == "float32" else []
            )
            baseline = None
            for path, jit_compile in paths:
                for mode in MODES if path == "graph" else MODES[1:]:
                    print(f"[{variant} {policy} {path}] {mode}", flush=True)
                    row = dict(model=variant, policy=policy, path=path, mode=mode)
                    row.update(measure(variant, policy, mode, jit_compile))
                    resident = row.get("stages", {}).get("call 2")
                    if mode == "keras model":
                        baseline = resident
                    row["ratio"] = round(resident / baseline, 2) if resident and baseline else None
                    rows.append(row)
                    print("  " + format_table([row]).splitlines()[-1], flush=True)
    print_and_save(rows, format_table(rows), args.json, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
