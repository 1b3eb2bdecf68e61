"""The fastest a ViT step can possibly run here: its own GEMMs and nothing else.

    python benchmarks/gemm_floor.py                      # every task, fp32 and bf16
    python benchmarks/gemm_floor.py --task train --precision fp32
    python benchmarks/gemm_floor.py --runtime xla        # inference, XLA's dots
    python benchmarks/gemm_floor.py --runtime openvino   # inference, OpenVINO's GEMMs

The floor of a step is one program that runs every matrix product of the step
(forward; in training also both gradients of each product), with its exact
shape and the benchmark's precision, one after the other, and nothing else:
a TensorFlow ``tf.function`` (oneDNN or Eigen kernels, or with ``--runtime
xla`` one XLA program, as ``keras_vit.freeze(jit_compile=True)`` runs) or an
OpenVINO model. In inference each dense layer's weight is a constant of its
own (a model's worth of weights, as in ``keras_vit.freeze``'s graphs and
OpenVINO's IRs: oneDNN prepacks constant weights), and TensorFlow runs each
dense product in the fastest of its kernel forms (``DENSE_FORMS``: a bare
MatMul, a MatMul with BiasAdd and a 1x1 Conv2D with BiasAdd, three oneDNN
primitives), picked per shape; attention's operands and training's products
are inputs. In training the step adds the optimiser
update that every implementation of the benchmark runs (Keras Adam over the
model's variables). Timed like any benchmark row, the program is the step of
an implementation whose element-wise work (LayerNorm, GELU, softmax,
residuals, casts) cost nothing, so its images/s bounds anything that uses the
same kernels: a target above it is out of reach on this machine, whatever
the code does around the GEMMs.

``benchmarks/run.py`` runs the floors as jobs of every sweep (``gemm-floor``,
``gemm-floor-xla``, ``gemm-floor-openvino``), interleaved with the
implementations, so that a floor and the rows it bounds meet the same
machine. ``--runtime openvino`` runs the same inference products in
OpenVINO's CPU plugin (weights as
constants, ``INFERENCE_PRECISION_HINT`` of the precision): the floor of the
OpenVINO rows, so that a gap between keras-vit and OpenVINO splits into what
their GEMM kernels differ by and what the code around the GEMMs costs.
``--verbose`` also times every product alone (its ms and GFLOP/s), which is
where two runtimes' kernels can be compared shape by shape.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from benchmarks.environment import with_variables  # noqa: E402
from benchmarks.gemm import GEMM_DTYPES, best_seconds  # noqa: E402
from benchmarks.specs import TASKS, model_spec  # noqa: E402

RUNTIMES = ("tensorflow", "xla", "openvino")
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16"}
#: Rows per image the head reads from the last block: the benchmark's ViT's class token.
HEAD_TOKENS = 1
FLOOR_REPEATS = 5
#: How a constant-weight 2-D product can run in TensorFlow: a bare MatMul
#: (oneDNN's matmul primitive), a MatMul + BiasAdd (its inner product) or a
#: 1x1 Conv2D + BiasAdd over the rows as one image (its 1x1 convolution,
#: what ``keras_vit.freeze`` runs the bf16 MLP's output GEMM as).
DENSE_FORMS = ("bare", "biased", "convolution")

#: The XLA floor's process environment. XLA's CPU scheduler by default
#: orders a program for concurrency: the floor's products, independent of
#: each other, all ran first, every result alive until its corner was taken
#: (ViT-B/16 batch 16: a 1.5 GB buffer, fresh pages at each call, the floor
#: 17 % slower than the model it should bound). The memory-minimising
#: scheduler runs them one after the other, each taking the previous one's
#: buffer, as a model's products do. XLA reads the flag at its first
#: compilation in a process.
XLA_ONE_AT_A_TIME = (("XLA_FLAGS", "--xla_cpu_enable_concurrency_optimized_scheduler=false"),)


def step_gemms(task):
    """The matrix products of one step of a task.

    The last block computes only the rows its head reads, as keras-vit's
    model does (``ViT.head_outputs``): the benchmark's ViT reads its class
    token, so that block's query, output projection and MLP run on one row
    per image, its keys and values on every token. The floor then bounds
    every implementation, those that compute all the rows included.

    Returns:
        list of ``(name, batch, m, k, n, count)``: ``count`` products of
        ``(batch, m, k) @ (batch, k, n)`` per step (``batch`` 1: a 2-D GEMM).
    """
    variant, batch, training = TASKS[task]
    s = model_spec(variant)
    d, mlp, heads = s["hidden_size"], s["mlp_dim"], s["num_heads"]
    patches = (s["image_size"] // s["patch_size"]) ** 2
    tokens, head_dim, layers = patches + 1, d // heads, s["num_layers"]
    rows, head_rows, full = batch * tokens, batch * HEAD_TOKENS, layers - 1
    dense = [  # (name, m, k, n, count): 2-D GEMMs of the forward pass
        ("patch embedding", batch * patches, s["patch_size"] ** 2 * 3, d, 1),
        ("qkv", rows, d, 3 * d, full),
        ("attention out", rows, d, d, full),
        ("mlp in", rows, d, mlp, full),
        ("mlp out", rows, mlp, d, full),
        ("last query", head_rows, d, d, 1),
        ("last key value", rows, d, 2 * d, 1),
        ("last attention out", head_rows, d, d, 1),
        ("last mlp in", head_rows, d, mlp, 1),
        ("last mlp out", head_rows, mlp, d, 1),
        ("head", batch, d, s["num_classes"], 1),
    ]
    attention = [  # (name, m, k, n, count), batched over batch x heads
        ("q k^T", tokens, head_dim, tokens, full),
        ("probs v", tokens, tokens, head_dim, full),
        ("last q k^T", HEAD_TOKENS, head_dim, tokens, 1),
        ("last probs v", HEAD_TOKENS, tokens, head_dim, 1),
    ]
    gemms = []
    for name, m, k, n, count in dense:
        gemms.append((name, 1, m, k, n, count))
        if training:
            if name != "patch embedding":  # no gradient for the images
                gemms.append((f"{name} dX", 1, m, n, k, count))
            gemms.append((f"{name} dW", 1, k, m, n, count))
    for name, m, k, n, count in attention:
        gemms.append((name, batch * heads, m, k, n, count))
        if training:
            gemms.append((f"{name} dA", batch * heads, m, n, k, count))
            gemms.append((f"{name} dB", batch * heads, k, m, n, count))
    return gemms


def program_order(gemms):
    """The products of ``step_gemms`` one by one, layer by layer.

    The one-off products (the patch embedding, the last block's and the
    head) run in the first round: the products do not depend on each other,
    so their order changes no work.

    Returns:
        list of ``(batch, m, k, n)``, one entry per product of the step.
    """
    rounds = max(count for *_, count in gemms)
    return [
        (batch, m, k, n)
        for layer in range(rounds)
        for _, batch, m, k, n, count in gemms
        if layer < count
    ]


def _operand_shapes(product, constant_weight):
    """``(a, b)`` shapes of a ``(batch, m, k, n)`` product; ``b`` None when a constant."""
    batch, m, k, n = product
    if batch == 1:
        return (m, k), None if constant_weight else (k, n)
    return (batch, m, k), (batch, k, n)


def _operands(products, constant_weights, make):
    """The inputs of a program: ``(a_inputs, b_inputs)``.

    ``a`` (an activation) is one input per shape, shared by the products of
    that shape, as a model's activations are hot in cache; ``b`` (a weight,
    or attention's second operand) is one input per product that has one, so
    that no two products are the same computation (which graph optimisers
    would run once) and each weight comes from memory, as in a model.
    ``make(shape)`` builds an input.
    """
    a_inputs, b_inputs = {}, []
    for product in products:
        shape_a, shape_b = _operand_shapes(product, constant_weights)
        if shape_a not in a_inputs:
            a_inputs[shape_a] = make(shape_a)
        b_inputs.append(None if shape_b is None else make(shape_b))
    return a_inputs, b_inputs


def tensorflow_program(products, precision, constant_weights, forms=None, xla=False):
    """One ``tf.function`` running ``products``, one at a time, nothing else.

    Args:
        products: ``program_order`` entries.
        precision: ``"fp32"`` or ``"bf16"``.
        constant_weights: a 2-D product's ``(k, n)`` operand is a graph
            constant of its own (inference weights), else an input.
        forms: ``{(m, k, n): form}``, the ``DENSE_FORMS`` entry each 2-D
            constant-weight product of that shape runs as (default "bare").
        xla: compile the function with XLA (its dots; the weights literals),
            one product at a time where the process has ``XLA_ONE_AT_A_TIME``.

    Returns:
        a no-argument callable running one step (returns when it is done).
    """
    import tensorflow as tf

    # One op at a time, as in a model (whose products depend on each other),
    # unless TensorFlow already started in this process (tests): then its setting.
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_inter_op_parallelism_threads(1)
    dtype = tf.as_dtype(GEMM_DTYPES[precision])
    rng = np.random.default_rng(0)

    def values(shape):
        return rng.standard_normal(shape, dtype="float32").astype(dtype.as_numpy_dtype)

    a_inputs, b_inputs = _operands(products, constant_weights, lambda s: tf.constant(values(s)))
    shapes, inputs = list(a_inputs), [*a_inputs.values(), *(b for b in b_inputs if b is not None)]

    @tf.function(autograph=False, jit_compile=xla)
    def program(*tensors):
        activations = dict(zip(shapes, tensors))
        operands = iter(tensors[len(shapes) :])
        corners = []
        for product, given in zip(products, b_inputs):
            shape_a, _ = _operand_shapes(product, constant_weights)
            b = tf.constant(values(product[2:])) if given is None else next(operands)
            form = (forms or {}).get(product[1:], "bare") if given is None else "bare"
            bias = None if form == "bare" else tf.constant(values(product[3:]))
            result = _dense(activations[shape_a], b, form, bias)
            # Only a corner comes back: copying a product out is not GEMM time.
            # One output each: a concatenation would keep every result alive
            # until the last product (XLA fuses the corners into it).
            corners.append(tf.reshape(result[..., :1, :1], [-1]))
        return corners

    def step():
        return np.concatenate([corner.numpy() for corner in program(*inputs)])

    step()  # traced now: the weights' NumPy values are freed
    return step


def _dense(a, b, form, bias):
    """``a @ b``, ``(m, k) @ (k, n)``, as ``form`` (``DENSE_FORMS``); ``bias`` ``(n,)`` or None."""
    import tensorflow as tf

    from keras_vit.model.ops import convolution_affine  # the form freeze runs

    if form == "bare":
        return tf.matmul(a, b)
    if form == "biased":
        return tf.nn.bias_add(tf.matmul(a, b), bias)
    return convolution_affine(a, b, bias)


def openvino_program(products, precision):
    """One OpenVINO model running ``products``, compiled by the CPU plugin.

    2-D products multiply an input by a constant weight of their own, as the
    dense layers of an IR do; batched ones multiply two inputs, as attention
    does (operands as in ``_operands``). The plugin runs the nodes one at a
    time (one stream); each product contributes its corner to the output.

    Returns:
        a no-argument callable running one inference.
    """
    import openvino as ov
    import openvino.opset13 as ops

    from benchmarks.openvino_impls import marked_with_precision

    rng = np.random.default_rng(0)
    feeds = {}

    def parameter(shape):
        name = f"input{len(feeds)}"
        feeds[name] = rng.standard_normal(shape, dtype="float32")
        return ops.parameter(shape, np.float32, name=name)

    a_inputs, b_inputs = _operands(products, True, parameter)
    corners = []
    for product, given in zip(products, b_inputs):
        shape_a, _ = _operand_shapes(product, True)
        b = (
            given
            if given is not None
            else ops.constant(rng.standard_normal(product[2:], dtype="float32"))
        )
        result = ops.matmul(a_inputs[shape_a], b, False, False)
        rank = len(shape_a)
        corner = ops.slice(
            result, np.zeros(rank, "int64"), np.ones(rank, "int64"), np.ones(rank, "int64")
        )
        corners.append(ops.reshape(corner, np.array([-1], "int64"), False))
    parameters = [*a_inputs.values(), *(b for b in b_inputs if b is not None)]
    compiled = ov.Core().compile_model(
        ov.Model([ops.concat(corners, 0)], parameters),
        "CPU",
        {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision]},
    )
    request = compiled.create_infer_request()

    def step():
        return request.infer(feeds, share_inputs=True)  # no copy of the inputs per step

    return marked_with_precision(step, compiled, precision)


def time_gemm(batch, m, k, n, precision, repeats=5, runtime="tensorflow"):
    """Best-of-``repeats`` seconds of one ``(batch, m, k) @ (batch, k, n)`` product.

    TensorFlow: both operands are inputs (a training product, or attention;
    a constant-weight dense product is ``dense_forms``). XLA and OpenVINO: a
    2-D product's weight is a constant, as in ``freeze``'s program and an IR.
    """
    products = [(batch, m, k, n)]
    if runtime == "openvino":
        return best_seconds(openvino_program(products, precision), repeats)
    if runtime == "xla":
        return best_seconds(tensorflow_program(products, precision, True, xla=True), repeats)
    return best_seconds(tensorflow_program(products, precision, False), repeats)


def dense_forms(m, k, n, precision, repeats=5):
    """Seconds of a constant-weight 2-D product in each of ``DENSE_FORMS``.

    Returns:
        ``{form: seconds}`` (best of ``repeats`` each).
    """
    products = [(1, m, k, n)]
    return {
        form: best_seconds(
            tensorflow_program(products, precision, True, {(m, k, n): form}), repeats
        )
        for form in DENSE_FORMS
    }


def fastest_forms(times):
    """``{(m, k, n): form}``, each shape's fastest: ``times`` ``{(m, k, n): dense_forms(...)}``."""
    return {shape: min(forms, key=forms.get) for shape, forms in times.items()}


def timed_forms(products, precision):
    """``fastest_forms`` of the 2-D constant-weight products, each shape timed here."""
    shapes = {product[1:] for product in products if product[0] == 1}
    return fastest_forms({shape: dense_forms(*shape, precision) for shape in shapes})


def time_optimizer_update(task, repeats=7):
    """Best-of-``repeats`` seconds of the benchmark's Adam update of a task's model."""
    return best_seconds(optimizer_update(task), repeats)


def optimizer_update(task):
    """A no-argument callable: one Keras Adam update of a task's model's variables."""
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

    return step


def floor_step(task, precision, runtime="tensorflow", forms=None):
    """The GEMM-only step of a task: its products in one program (+ Adam in training).

    Args:
        task: a key of ``TASKS``.
        precision: ``"fp32"`` or ``"bf16"``.
        runtime: ``"tensorflow"``, or ``"xla"`` or ``"openvino"`` (inference
            tasks only).
        forms: TensorFlow inference: ``{(m, k, n): form}`` of the dense
            products (``DENSE_FORMS``); default: timed here (``timed_forms``).

    Returns:
        a no-argument callable running one step.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}.")
    if precision not in GEMM_DTYPES:
        raise ValueError(f"precision must be one of {tuple(GEMM_DTYPES)}, got {precision!r}.")
    training = TASKS[task][2]
    if runtime != "tensorflow" and training:
        raise ValueError(
            f"The {runtime} floor times inference only; got the training task {task!r}."
        )
    products = program_order(step_gemms(task))
    if runtime == "openvino":
        return openvino_program(products, precision)
    if runtime == "xla":
        return tensorflow_program(products, precision, True, xla=True)
    if training:
        gemms, update = tensorflow_program(products, precision, False), optimizer_update(task)
        return lambda: (gemms(), update())
    if forms is None:
        forms = timed_forms(products, precision)
    return tensorflow_program(products, precision, True, forms)


def build_floor(task, precision, workdir, runtime="tensorflow"):
    """``benchmarks/registry.py`` builder of the ``gemm-floor`` rows (``workdir`` unused)."""
    return floor_step(task, precision, runtime)


def gemm_floor(task, precision, runtime="tensorflow"):
    """Times a task's GEMM-only step, and every product of it alone.

    Returns:
        dict with ``rows`` (name, shape, count, ms per product timed alone,
        GFLOP/s), ``optimizer_ms`` (the Adam update alone), ``step_ms`` (the
        floor step, best of ``FLOOR_REPEATS``) and ``images_per_s`` (the bound).
    """
    training = TASKS[task][2]
    rows, forms = [], {}
    overhead = time_gemm(1, 1, 1, 1, precision, runtime=runtime)  # the call itself
    for name, batch, m, k, n, count in step_gemms(task):
        products = 1  # in the timed call
        if runtime == "tensorflow" and batch == 1 and not training:
            forms[m, k, n] = dense_forms(m, k, n, precision)
            seconds = min(forms[m, k, n].values())
        elif batch > 1:  # all layers' attention products in one batched call
            seconds, products = time_gemm(batch * count, m, k, n, precision, runtime=runtime), count
        else:
            seconds = time_gemm(batch, m, k, n, precision, runtime=runtime)
        seconds = max(seconds - overhead, 1e-9) / products
        rows.append(
            dict(
                name=name,
                shape=f"{batch}x{m}x{k}x{n}",
                count=count,
                ms=round(seconds * 1e3, 3),
                gflops=round(2 * batch * m * k * n / seconds / 1e9, 1),
            )
        )
    step = best_seconds(floor_step(task, precision, runtime, fastest_forms(forms)), FLOOR_REPEATS)
    optimizer = time_optimizer_update(task) if training else 0.0
    return dict(
        rows=rows,
        optimizer_ms=round(optimizer * 1e3, 1),
        step_ms=round(step * 1e3, 1),
        images_per_s=round(TASKS[task][1] / step, 3),
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
    if args.runtime == "xla":  # before TensorFlow compiles anything here
        os.environ.update(with_variables(XLA_ONE_AT_A_TIME, os.environ))
    print(
        f"{'task':10} {'precision':9} {'optimizer ms':>12} {'floor ms/step':>14} "
        f"{'images/s bound':>15}"
    )
    for task in args.task:
        if args.runtime != "tensorflow" and TASKS[task][2]:
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
                        f"{row['ms']:9.3f} ms {row['gflops']:7.1f} GFLOP/s (alone)"
                    )


if __name__ == "__main__":
    main()
