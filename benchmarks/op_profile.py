"""Where a training or inference step spends its time, op type by op type.

    python benchmarks/op_profile.py --impl keras-vit-onednn --task train --precision bf16

Runs a few steps of one benchmark job (``benchmarks/registry.py``) under the
TensorFlow profiler, reads the trace (XPlane) and prints, per op type, the
time summed over all threads, its share of the total, and how many times the
op ran per step. Op time is summed over the intra-op threads, so the total is
about ``threads x step time``. Graph-mode (``jit_compile=False``) jobs show
TensorFlow/oneDNN kernels by type; XLA jobs show fused clusters.
``--inter-op 1`` runs one op at a time, so that each op's time is its own
(with the default, ops running side by side stretch each other's times).

OpenVINO jobs (``openvino``, ``openvino-savedmodel``, ``keras-vit-openvino``)
are compiled with the CPU plugin's per-layer performance counters instead;
their rows are the executed primitives by kind (``exec_type`` of each
layer, e.g. ``brgemm_avx512_amx`` or ``jit_avx512``, with the layer type)
and their time summed over the layers: OpenVINO's side of the same table.

    python benchmarks/op_profile.py --impl openvino --task infer_b1 --precision bf16
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script


def _op_type(name):
    """``"scope/op_name:OpType"`` -> ``"OpType"``."""
    return name.rsplit(":", 1)[-1]


def op_times(xspace_path):
    """Total microseconds and call counts per op type, from a profiler trace.

    TensorFlow kernels appear on the executor threads (``tf_Compute/...``)
    as ``"scope/op_name:OpType"`` events.

    Args:
        xspace_path: path to a ``.xplane.pb`` file written by the profiler.

    Returns:
        (Counter op_type -> microseconds, Counter op_type -> calls).
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xspace_path, "rb") as f:
        space.ParseFromString(f.read())
    totals, counts = collections.Counter(), collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" in name and "::" not in name:  # "::": profiler spans, not ops
                    op = _op_type(name)
                    totals[op] += event.duration_ps / 1e6
                    counts[op] += 1
    return totals, counts


def openvino_times(request, steps):
    """Microseconds and counts per ``"LayerType (exec_type)"`` of the last ``steps`` runs."""
    totals, counts = collections.Counter(), collections.Counter()
    for _ in range(steps):
        request.infer()
        for layer in request.get_profiling_info():
            if layer.status.name == "EXECUTED":
                kind = f"{layer.node_type} ({layer.exec_type})"
                totals[kind] += layer.real_time.total_seconds() * 1e6
                counts[kind] += 1
    return totals, counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", default="keras-vit-onednn")
    parser.add_argument("--task", default="train")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--inter-op", type=int, default=0, help="inter-op threads (0: default)")
    parser.add_argument("--workdir", help="folder of exported models to reuse (run.py --workdir)")
    args = parser.parse_args(argv)

    from benchmarks.environment import with_variables
    from benchmarks.registry import IMPLS

    env = IMPLS[args.impl].env  # read by TensorFlow when it starts (+onednn rows)
    wanted = with_variables(env, os.environ)
    if any(os.environ.get(name) != wanted[name] for name, _ in env):
        again = sys.argv[1:] if argv is None else argv
        os.execve(sys.executable, [sys.executable, __file__, *again], wanted)
    import tensorflow as tf

    if args.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)

    from benchmarks import openvino_impls

    openvino_impls.PERF_COUNT = True
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or scratch
        step = IMPLS[args.impl].builder(args.task, args.precision, workdir)
        for _ in range(3):
            step()
        if hasattr(step, "request"):  # an OpenVINO job: the plugin's own counters
            totals, counts = openvino_times(step.request, args.steps)
            _print(args, totals, counts, "layer time, wall clock per layer")
            return
        logdir = os.path.join(scratch, "profile")
        tf.profiler.experimental.start(logdir)
        for _ in range(args.steps):
            step()
        tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        totals, counts = op_times(path)
    _print(args, totals, counts, "op time per step (summed over threads)")


def _print(args, totals, counts, what):
    total = sum(totals.values())
    print(f"{args.impl} {args.task} {args.precision}: {total / 1e3 / args.steps:.0f} ms of {what}")
    print(f"{'op type':48} {'ms/step':>9} {'share':>7} {'calls/step':>10}")
    for op, us in totals.most_common(args.top):
        print(
            f"{op[:48]:48} {us / 1e3 / args.steps:9.1f} {us / total:7.1%} "
            f"{counts[op] / args.steps:10.0f}"
        )


if __name__ == "__main__":
    main()
