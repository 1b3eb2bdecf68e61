"""The fastest a ViT step can possibly run here: its own GEMMs, timed alone.

    python benchmarks/gemm_floor.py                      # every task, fp32 and bf16
    python benchmarks/gemm_floor.py --task train --precision fp32
    python benchmarks/gemm_floor.py --runtime openvino   # inference, OpenVINO's GEMMs

Every matrix product of one step (forward; in training also both gradients
of each product) is timed on its own, with its exact shape, as a TensorFlow
(oneDNN) matmul of the benchmark's precision (in inference a dense layer's
weight is a graph constant, which oneDNN prepacks once, as in
``keras_vit.freeze``'s graphs and OpenVINO's IRs; attention's operands and
training's products are inputs); their sum is the step time of an
implementation whose element-wise work (LayerNorm, GELU, softmax, residuals,
casts) cost nothing. In training the floor adds the optimiser update that
every implementation of the benchmark runs (Keras Adam over the model's
variables), timed alone as well. ``images/s`` at that floor is an upper bound
for any implementation that uses the same kernels, so a target above it is
out of reach on this machine, whatever the code does around the GEMMs.

``--runtime openvino`` times the same inference GEMMs with OpenVINO's CPU
plugin (weights as constants, as in an IR; ``INFERENCE_PRECISION_HINT`` of the
precision): the floor of the OpenVINO rows, so that a gap between keras-vit
and OpenVINO can be split into what their GEMM kernels differ by and what
the code around the GEMMs costs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

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


RUNTIMES = ("tensorflow", "openvino")
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16"}


def time_gemm_openvino(batch, m, k, n, precision, repeats=5):
    """Best-of-``repeats`` seconds of one product run by OpenVINO's CPU plugin.

    A 2-D GEMM (``batch`` 1) multiplies its input by a constant weight, as
    the dense layers of an IR do; a batched one multiplies two inputs, as
    attention does. Only a corner of the product is returned.
    """
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    shape_a = (m, k) if batch == 1 else (batch, m, k)
    a = ops.parameter(shape_a, np.float32, name="a")
    inputs = {"a": rng.standard_normal(shape_a, dtype="float32")}
    if batch == 1:
        b = ops.constant(rng.standard_normal((k, n), dtype="float32"))
        parameters = [a]
    else:
        b = ops.parameter((batch, k, n), np.float32, name="b")
        inputs["b"] = rng.standard_normal((batch, k, n), dtype="float32")
        parameters = [a, b]
    product = ops.matmul(a, b, False, False)
    rank = len(shape_a)
    corner = ops.slice(
        product, np.zeros(rank, "int64"), np.ones(rank, "int64"), np.ones(rank, "int64")
    )
    compiled = ov.Core().compile_model(
        ov.Model([corner], parameters),
        "CPU",
        {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision]},
    )
    request = compiled.create_infer_request()
    return best_seconds(lambda: request.infer(inputs), repeats)


def time_gemm(batch, m, k, n, precision, repeats=5, runtime="tensorflow", constant_weight=False):
    """Best-of-``repeats`` seconds of one ``(batch, m, k) @ (batch, k, n)`` product.

    ``constant_weight``: a 2-D product's ``(k, n)`` operand is a graph constant
    (an inference weight), else an input (training: weights change every step).
    """
    if runtime == "openvino":
        return time_gemm_openvino(batch, m, k, n, precision, repeats)
    import tensorflow as tf

    dtype = GEMM_DTYPES[precision]
    shape_a = (m, k) if batch == 1 else (batch, m, k)
    shape_b = (k, n) if batch == 1 else (batch, k, n)
    a = tf.cast(tf.random.normal(shape_a), dtype)
    b = tf.cast(tf.random.normal(shape_b), dtype)
    # Only a corner of the product comes back: copying it out is not GEMM time.
    if batch == 1 and constant_weight:
        # A constant weight as a dense layer uses it: oneDNN prepacks it once
        # for a fused MatMul + BiasAdd (its inner product), not for a bare
        # MatMul; the faster of the two counts.
        weight, bias = b.numpy(), tf.ones((n,), dtype).numpy()
        bare = tf.function(lambda a: tf.matmul(a, tf.constant(weight))[..., :1, :1])
        dense = tf.function(
            lambda a: tf.nn.bias_add(tf.matmul(a, tf.constant(weight)), tf.constant(bias))[
                ..., :1, :1
            ]
        )
        return min(best_seconds(lambda f=f: f(a).numpy(), repeats) for f in (bare, dense))
    product = tf.function(lambda a, b: tf.matmul(a, b)[..., :1, :1])
    return best_seconds(lambda: product(a, b).numpy(), repeats)


def time_optimizer_update(task, repeats=7):
    """Best-of-``repeats`` seconds of the benchmark's Adam update of a task's model."""
    import keras
    import tensorflow as tf

    from benchmarks.keras_impls import task_model

    model = task_model(task)
    variables = model.trainable_variables
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(variables)
    grads = [tf.random.normal(v.shape, stddev=1e-3) for v in variables]
    update = tf.function(lambda g: optimizer.apply(g, variables), autograph=False)

    def step():
        update(grads)
        variables[0].numpy()

    return best_seconds(step, repeats)


def gemm_floor(task, precision, runtime="tensorflow"):
    """Times every GEMM of a step (and, in training, the optimiser update).

    Args:
        task: a key of ``TASKS``.
        precision: ``"fp32"`` or ``"bf16"``.
        runtime: ``"tensorflow"`` (oneDNN matmuls) or ``"openvino"``
            (inference tasks only).

    Returns:
        dict with ``rows`` (name, shape, count, ms per product, GFLOP/s),
        ``optimizer_ms``, ``step_ms`` (the sum over the step) and
        ``images_per_s`` (the bound).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}.")
    if runtime == "openvino" and TASKS[task][2]:
        raise ValueError(f"OpenVINO runs inference only; got the training task {task!r}.")
    rows, total = [], 0.0
    training = TASKS[task][2]
    overhead = time_gemm(1, 1, 1, 1, precision, runtime=runtime)  # the call itself
    for name, batch, m, k, n, count in step_gemms(task):
        if batch > 1:  # all layers' attention products in one batched call
            seconds = time_gemm(batch * count, m, k, n, precision, runtime=runtime)
            seconds = max(seconds - overhead, 1e-9) / count
        else:
            seconds = time_gemm(
                batch, m, k, n, precision, runtime=runtime, constant_weight=not training
            )
            seconds = max(seconds - overhead, 1e-9)
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
    images = TASKS[task][1]
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
    parser.add_argument("--runtime", choices=RUNTIMES, default="tensorflow")
    parser.add_argument("--verbose", action="store_true", help="print every GEMM")
    args = parser.parse_args(argv)
    print(
        f"{'task':10} {'precision':9} {'optimizer ms':>12} {'floor ms/step':>14} "
        f"{'images/s bound':>15}"
    )
    for task in args.task:
        if args.runtime == "openvino" and TASKS[task][2]:
            continue
        for precision in args.precision:
            floor = gemm_floor(task, precision, args.runtime)
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
