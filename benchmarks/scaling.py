"""The paper's Figure 12 on this machine: inference speed and memory against input size.

    python benchmarks/scaling.py --json benchmarks/results/scaling.json \\
        --png benchmarks/results/scaling.png
    python benchmarks/scaling.py --quick --png /tmp/scaling.png    # 2 models, 2 sizes

Appendix D.5 of Dosovitskiy et al. (2021) compares ViT-B/32, ViT-B/16, ViT-L/16
and the hybrid R50+ViT-B/16 with ResNets across input sizes on TPUv3 cores:
wall-clock throughput (left) and the largest batch that fits (right). Here,
on this CPU, each model (``keras.applications.ResNet50`` for the CNN side,
random weights) runs inference at 224, 288, 384, 448 and 512 px, in float32
and ``mixed_bfloat16``, each configuration in its own fresh process:

- throughput: images/s at ``--batch`` (best step after a warm-up, like
  ``benchmarks/run.py``), TensorFlow graph with oneDNN (``jit_compile=False``,
  the fastest setting on this CPU);
- memory per image: the growth of the process's peak resident memory from
  batch 1 to batch ``--batch``, over ``batch - 1`` (the activations one more
  image costs; the weights and the graph are in both and cancel). The
  paper's largest batch is the device memory over this.

The figure has the paper's two panels (speed, and memory per image instead
of the largest batch); the JSON holds every row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MODELS = ("ViT-B/32", "ViT-B/16", "ViT-L/16", "R50+ViT-B/16", "ResNet50")
#: The paper's names -> keras-vit variants (ResNet50 is keras.applications').
VARIANTS = {"ViT-B/32": "B/32", "ViT-B/16": "B/16", "ViT-L/16": "L/16", "R50+ViT-B/16": "R50+B/16"}
SIZES = (224, 288, 384, 448, 512)
PRECISIONS = ("fp32", "bf16")
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}
# (models, sizes, batch, min steps, min seconds)
MODES = {
    "full": (MODELS, SIZES, 8, 3, 10.0),
    "quick": (("ViT-B/32", "ResNet50"), (224, 384), 2, 2, 2.0),
}
JOB_TIMEOUT_S = 1800


def build(model, size):
    """A random-weight classifier (1000 classes) for ``size`` x ``size`` images."""
    if model == "ResNet50":
        import keras

        return keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
    from keras_vit.model.factories import build_variant

    return build_variant(VARIANTS[model], image_size=size)


def run_job(model, size, precision, batch, min_steps, min_time):
    """Times one configuration in this process; returns its row."""
    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks.worker import peak_rss_mb, time_steps

    keras.config.set_dtype_policy(POLICIES[precision])
    net = build(model, size)
    spec = tf.TensorSpec((None, size, size, 3), tf.float32)
    forward = tf.function(lambda x: net(x, training=False), input_signature=[spec])
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"))
    forward(images[:1]).numpy()  # traced once; batch 1's activations
    one = peak_rss_mb()
    times = time_steps(lambda: forward(images).numpy(), 1, min_steps, min_time)
    peak = peak_rss_mb()
    return dict(
        model=model,
        size=size,
        precision=precision,
        batch=batch,
        status="ok",
        images_per_s=round(batch / min(times), 3),
        peak_rss_mb=round(peak, 1),
        memory_per_image_mb=round(max(peak - one, 0.0) / (batch - 1), 1),
        parameters=int(sum(np.prod(v.shape) for v in net.weights)),
    )


def plot(rows, path):
    """Two panels like the paper's Figure 12: images/s and memory per image vs input size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_vit.atomic import atomic_path

    figure, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = dict(zip(MODELS, "osD^v"))
    for (model, precision), group in _groups(rows).items():
        sizes = [r["size"] for r in group]
        style = dict(
            marker=markers.get(model, "o"),
            linestyle="-" if precision == "fp32" else "--",
            color=f"C{MODELS.index(model) if model in MODELS else 0}",
            label=f"{model} {precision}",
        )
        speed.plot(sizes, [r["images_per_s"] for r in group], **style)
        memory.plot(sizes, [r["memory_per_image_mb"] for r in group], **style)
    for axis, label in (
        (speed, "inference throughput (images/s)"),
        (memory, "memory per image (MB, activations)"),
    ):
        axis.set_xlabel("input size (px)")
        axis.set_ylabel(label)
        axis.set_yscale("log")
        axis.set_xticks(sorted({r["size"] for r in rows}))
        axis.grid(True, which="both", alpha=0.3)
    speed.set_title("Speed (the paper's left panel)")
    memory.set_title("Memory (paper: largest batch = memory / this)")
    memory.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    with atomic_path(path, ".png") as partial:
        figure.savefig(partial, dpi=120)
    plt.close(figure)


def _groups(rows):
    groups = {}
    for row in rows:
        if row["status"] == "ok":
            groups.setdefault((row["model"], row["precision"]), []).append(row)
    return {key: sorted(group, key=lambda r: r["size"]) for key, group in groups.items()}


def format_table(rows):
    """Plain-text table of the rows."""
    header = (
        f"{'model':14} {'size':>4} {'prec':4} {'img/s':>8} {'MB/image':>9} {'peak MB':>8}  status"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"{r['model']:14} {r['size']:4} {r['precision']:4} {r['status']}")
            continue
        lines.append(
            f"{r['model']:14} {r['size']:4} {r['precision']:4} {r['images_per_s']:8.3f} "
            f"{r['memory_per_image_mb']:9.1f} {r['peak_rss_mb']:8.0f}  ok"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 models, 2 sizes, batch 2")
    parser.add_argument("--models", nargs="+", choices=MODELS)
    parser.add_argument("--sizes", nargs="+", type=int)
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--batch", type=int, help="images per step (>= 2)")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--png", help="write the figure to this file")
    parser.add_argument(
        "--job", nargs=3, metavar=("MODEL", "SIZE", "PRECISION"), help=argparse.SUPPRESS
    )
    parser.add_argument("--min-steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--min-time", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    models, sizes, batch, min_steps, min_time = MODES["quick" if args.quick else "full"]
    batch = args.batch or batch
    if batch < 2:
        parser.error("--batch must be at least 2 (memory per image is a difference)")
    if args.job:  # one configuration, in this (fresh) process
        model, size, precision = args.job
        row = run_job(model, int(size), precision, batch, args.min_steps, args.min_time)
        print("RESULT " + json.dumps(row), flush=True)
        return 0
    from benchmarks.run import machine, run_worker
    from keras_vit.atomic import write_json_atomic

    info, started, rows = machine(), time.time(), []
    jobs = [
        (model, size, precision)
        for precision in args.precisions
        for size in args.sizes or sizes
        for model in args.models or models  # models interleaved at each size
    ]
    for number, (model, size, precision) in enumerate(jobs, 1):
        print(f"[{number}/{len(jobs)}] {model} {size} {precision}", flush=True)
        job = ["--job", model, str(size), precision, "--batch", str(batch)]
        job += ["--min-steps", str(min_steps), "--min-time", str(min_time)]
        row = run_worker(job, JOB_TIMEOUT_S, module="benchmarks.scaling")
        rows.append({"model": model, "size": size, "precision": precision, **row})
    info.update(load_average_end=os.getloadavg(), minutes=round((time.time() - started) / 60, 1))
    print("\n" + format_table(rows))
    if args.json:
        write_json_atomic(dict(machine=info, batch=batch, rows=rows), args.json, indent=1)
    if args.png:
        plot(rows, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
