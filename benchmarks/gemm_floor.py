"""The fastest a ViT step can possibly run here: its own GEMMs, timed alone.

    python benchmarks/gemm_floor.py                      # every task, fp32 and bf16
    python benchmarks/gemm_floor.py --task train --precision fp32

Every matrix product of one step (forward; in training also both gradients
of each product) is timed on its own, with its exact shape, as a TensorFlow
(oneDNN) matmul of the benchmark's precision; their sum is the step time of an
implementation whose element-wise work (LayerNorm, GELU, softmax, residuals,
casts) cost nothing. In training the floor adds the optimiser update that
every implementation of the benchmark runs (Keras Adam over the model's
variables), timed alone as well. ``images/s`` at that floor is an upper bound
for any implementation that uses the same kernels, so a target above it is
out of reach on this machine, whatever the code does around the GEMMs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from benchmarks.gemm import GEMM_DTYPES, best_seconds  # noqa: E402
from benchmarks.specs import TASKS, model_spec  # noqa: E402


def step_gemms(task):
    """The matrix products of one step of a task.

    Returns:
        list of ``(name, batch, m, k, n, count)``: ``count`` products of
        ``(batch, m, k) @ (batch, k, n)`` per step (``batch`` 1: a 2-D GEMM).
    """
    variant, batch, training = TASKS[task]
    s = model_spec(variant)
    d, mlp, heads = s["hidden_size"], s["mlp_dim"], s["num_heads"]
    patches = (s["image_size"] // s["patch_size"]) ** 2
    tokens, head_dim, layers = patches + 1, d // heads, s["num_layers"]
    rows = batch * tokens
    dense = [  # (name, m, k, n, count): 2-D GEMMs of the forward pass
        ("patch embedding", batch * patches, s["patch_size"] ** 2 * 3, d, 1),
        ("qkv", rows, d, 3 * d, layers),
        ("attention out", rows, d, d, layers),
        ("mlp in", rows, d, mlp, layers),
        ("mlp out", rows, mlp, d, layers),
        ("head", batch, d, s["num_classes"], 1),
    ]
    attention = [  # batched over batch x heads
        ("q k^T", tokens, head_dim, tokens),
        ("probs v", tokens, tokens, head_dim),
    ]
    gemms = []
    for name, m, k, n, count in dense:
        gemms.append((name, 1, m, k, n, count))
        if training:
            if name != "patch embedding":  # no gradient for the images
                gemms.append((f"{name} dX", 1, m, n, k, count))
            gemms.append((f"{name} dW", 1, k, m, n, count))
    for name, m, k, n in attention:
        gemms.append((name, batch * heads, m, k, n, layers))
        if training:
            gemms.append((f"{name} dA", batch * heads, m, n, k, layers))
            gemms.append((f"{name} dB", batch * heads, k, m, n, layers))
    return gemms


def time_gemm(batch, m, k, n, precision, repeats=5):
    """Best-of-``repeats`` seconds of one ``(batch, m, k) @ (batch, k, n)`` product."""
    import tensorflow as tf

    dtype = GEMM_DTYPES[precision]
    shape_a = (m, k) if batch == 1 else (batch, m, k)
    shape_b = (k, n) if batch == 1 else (batch, k, n)
    a = tf.cast(tf.random.normal(shape_a), dtype)
    b = tf.cast(tf.random.normal(shape_b), dtype)
    # Only a corner of the product comes back: copying it out is not GEMM time.
    product = tf.function(lambda a, b: tf.matmul(a, b)[..., :1, :1])
    return best_seconds(lambda: product(a, b).numpy(), repeats)


def time_optimizer_update(task, repeats=7):
    """Best-of-``repeats`` seconds of the benchmark's Adam update of a task's model."""
    import keras
    import tensorflow as tf

    from keras_vit.model.factories import build_variant

    model = build_variant(TASKS[task][0], image_size=model_spec(TASKS[task][0])["image_size"])
    variables = model.trainable_variables
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(variables)
    grads = [tf.random.normal(v.shape, stddev=1e-3) for v in variables]
    update = tf.function(lambda g: optimizer.apply(g, variables), autograph=False)

    def step():
        update(grads)
        variables[0].numpy()

    return best_seconds(step, repeats)


def gemm_floor(task, precision):
    """Times every GEMM of a step (and, in training, the optimiser update).

    Returns:
        dict with ``rows`` (name, shape, count, ms per product, GFLOP/s),
        ``optimizer_ms``, ``step_ms`` (the sum over the step) and
        ``images_per_s`` (the bound).
    """
    rows, total = [], 0.0
    overhead = time_gemm(1, 1, 1, 1, precision)  # the call itself, taken off each product
    for name, batch, m, k, n, count in step_gemms(task):
        if batch > 1:  # all layers' attention products in one batched call
            seconds = max(time_gemm(batch * count, m, k, n, precision) - overhead, 1e-9) / count
        else:
            seconds = max(time_gemm(batch, m, k, n, precision) - overhead, 1e-9)
        total += count * seconds
        rows.append(
            dict(
                name=name,
                shape=f"{batch}x{m}x{k}x{n}",
                count=count,
                ms=round(seconds * 1e3, 3),
                gflops=round(2 * batch * m * k * n / seconds / 1e9, 1),
            )
        )
    _, images, training = TASKS[task]
    optimizer = time_optimizer_update(task) if training else 0.0
    total += optimizer
    return dict(
        rows=rows,
        optimizer_ms=round(optimizer * 1e3, 1),
        step_ms=round(total * 1e3, 1),
        images_per_s=round(images / total, 3),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), nargs="+", default=sorted(TASKS))
    parser.add_argument(
        "--precision", choices=sorted(GEMM_DTYPES), nargs="+", default=sorted(GEMM_DTYPES)
    )
    parser.add_argument("--verbose", action="store_true", help="print every GEMM")
    args = parser.parse_args(argv)
    print(
        f"{'task':10} {'precision':9} {'optimizer ms':>12} {'floor ms/step':>14} "
        f"{'images/s bound':>15}"
    )
    for task in args.task:
        for precision in args.precision:
            floor = gemm_floor(task, precision)
            print(
                f"{task:10} {precision:9} {floor['optimizer_ms']:12.1f} {floor['step_ms']:14.1f} "
                f"{floor['images_per_s']:15.3f}"
            )
            if args.verbose:
                for row in floor["rows"]:
                    print(
                        f"    {row['name']:22} {row['shape']:>20} x{row['count']:<3} "
                        f"{row['ms']:9.3f} ms {row['gflops']:7.1f} GFLOP/s"
                    )


if __name__ == "__main__":
    main()
