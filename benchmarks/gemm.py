"""The machine's matrix-multiply rate, the yardstick of achieved GFLOP/s."""

from __future__ import annotations

import time

GEMM_SIZE = 4096
# Benchmark precision -> TensorFlow dtype name of the GEMM operands.
GEMM_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def best_seconds(call, repeats):
    """Fastest of ``repeats`` timed runs of ``call()``, after one untimed warm-up.

    The best run, like the model rows: on a shared machine the fastest
    repetition is the one least disturbed by other processes. ``call`` must
    return only when its work is done (e.g. end in ``.numpy()``).
    """
    call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def measure_gemm(precision, size=GEMM_SIZE, repeats=7):
    """Best-of-``repeats`` GFLOP/s of a ``size``^3 TensorFlow matmul (``best_seconds``).

    Args:
        precision: str. ``"fp32"`` or ``"bf16"``.
        size: int. Square matrix size.
        repeats: int. Timed repetitions (after one warm-up).

    Returns:
        float. GFLOP/s (2 size^3 FLOPs per product).
    """
    import tensorflow as tf

    if precision not in GEMM_DTYPES:
        raise ValueError(f"GEMM precision must be one of {tuple(GEMM_DTYPES)}, got {precision!r}.")
    matrix = tf.cast(tf.random.normal((size, size)), GEMM_DTYPES[precision])
    product = tf.function(tf.matmul)
    return 2 * size**3 / best_seconds(lambda: product(matrix, matrix).numpy(), repeats) / 1e9
