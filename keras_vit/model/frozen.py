"""In-process inference with the weights frozen into the graph as constants.

``freeze(model)`` returns a ``FrozenModel``: the model's inference call
(``training=False``) traced once as a TensorFlow function whose weights are
graph constants instead of variables. TensorFlow then does, once, what it
otherwise redoes at every step:

- Grappler folds the weight arithmetic of the layers: the fused QKV kernel
  (concatenated and query pre-scaled), the reshapes of the official kernel
  layouts and, under ``mixed_bfloat16``, every cast of a float32 weight to
  bfloat16;
- oneDNN sees constant weights, so its fused GEMMs (``MatMul`` + bias +
  GELU) take its blocked, pre-packed kernels (the AMX ``brgemm`` inner
  product on this machine) and reorder each weight once. With variable
  weights the same fused GEMM runs a generic ``gemm:jit`` kernel on the
  plain layout (measured: ViT-B/16's MLP GEMM at batch 16 in bf16 31 ms
  with variables, 18 ms with constants);
- where oneDNN runs the model's compute dtype (``onednn_runs``), the
  function is traced in the ``"onednn"`` spelling (``keras_vit.model.ops``):
  each LayerNorm becomes one ``_MklLayerNorm`` kernel instead of five
  element-wise ones, and the attention softmax takes bf16 logits without
  casts (oneDNN computes it in float32). Under the ``bfloat16`` policy
  (``dtype="bfloat16"``: the residual stream in bf16 too) the graph then
  has no casts but the input's and the logits'. Each MLP's output GEMM
  in bf16, and each attention output projection in float32, is a 1x1
  convolution (``keras_vit.model.ops.block_affine``), which oneDNN runs
  faster than the fused MatMul's inner product at 197 rows (the frozen
  ViT-B/16 step at batch 1 1.06x and 1.018x faster on an AVX512-BF16 AMD
  EPYC; level at batch 16). Frozen for one image (``batch_size=1``), the
  bf16 QKV products run as bare MatMuls with the bias inside the product
  (the step 1.029x faster at batch 1; 0.986x as fast at batch 16, hence
  not the default);
- in that oneDNN graph, float32 or bfloat16, keras-vit's CPU kernels
  (``keras_vit.kernels``, compiled on this machine on first use;
  ``native_kernels``) run each LayerNorm and each block's self-attention as
  one op (in bf16 the LayerNorms only): TensorFlow has no fused attention
  op on CPU, and its ``_MklLayerNorm`` sets up oneDNN at every call.

``jit_compile=True`` instead compiles the whole call with XLA, the weights
being literals of the compiled program (the same weight arithmetic folded
at compile time). On a CPU without AVX-512 (an AVX2 AMD EPYC) that program
is the faster one: XLA's dots beat TensorFlow's oneDNN and Eigen GEMM
kernels at ViT's shapes, and its fusions run LayerNorm, GELU and softmax in
one pass each (``benchmarks/results/cpu_avx2_xla.json``: ViT-B/16 batch 1
213 ms with XLA against 231 ms in the oneDNN graph, batch 16 4.62 against
4.57 images/s; ``mixed_bfloat16`` batch 1 220 ms against 329 ms, XLA running
its bf16 dots in float32 on a CPU without bf16 instructions). ``"auto"``, the
default, picks XLA exactly there: on a machine without a GPU whose
TensorFlow does not run bfloat16 with oneDNN (no AVX-512). Where it does,
the oneDNN graph stays: on an AVX512-BF16 AMD EPYC (Zen 4) it beat XLA's
program in float32 (batch 16 5.74 against 4.99 images/s, batch 1 185.8
against 192.8 ms) and in bf16 by 1.6-2x, XLA computing bf16 dots in float32
(``benchmarks/results/cpu_zen4_openvino.json``). XLA compiles
once per input shape (seconds for ViT-B/16 at the first call of each batch
size); none of this reaches an export, which ``keras_vit.freeze`` is not.

With oneDNN, as in every TensorFlow graph of the model, each residual add
runs inside the GEMM before it (``TransformerBlock`` hands the stream to the
attention's output projection and the MLP's second Dense: one MatMul + bias
+ add kernel, where the add was a pass of its own over the stream); not
under ``mixed_bfloat16``, whose float32 stream adds a cast of each bf16
branch.

TensorFlow runs oneDNN by default on x86 CPUs with AVX512-VNNI, AVX512-BF16
or AMX. On others (an AVX2 AMD EPYC) it runs Eigen's kernels unless
``TF_ENABLE_ONEDNN_OPTS=1`` is set before TensorFlow is imported, and its
oneDNN takes bfloat16 only with AVX-512: without, ``mixed_bfloat16`` runs
Eigen's emulated bf16 kernels (slower than float32) in the default spelling.

The numbers are the model's own (same kernels of the same precision; the
oneDNN kernels differ in summation order only). It is a snapshot: weights
changed after ``freeze`` (training, ``load_weights``) are not seen; freeze
again. The constants live in the function's graph, a protocol buffer that
cannot exceed 2 GiB, so models with more than ``MAX_CONSTANT_BYTES`` of
weights (ViT-H/14 in float32) are refused. Memory: TensorFlow keeps several
copies of the constants (the traced graph, the optimised one, the kernels'
tensors, oneDNN's packed weights): ViT-B/16's process peaks at ~4.5 GB
resident (~1.0 GB for the model alone), ViT-L/16's at 15.0 GB frozen in
bf16 and 18.9 GB in float32 (1.9 GB). XLA's program holds fewer: 4.3 GB
for ViT-B/16, 12.7 GB (``mixed_bfloat16``) and 13.4 GB (float32) for
ViT-L/16, whose batch-1 call it runs in 0.82-0.83 s against 1.42 s in
TensorFlow's default graph on the AVX2 EPYC.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_vit import kernels as native
from keras_vit.memory import release_memory
from keras_vit.messages import logger
from keras_vit.model.ops import KERNEL_DTYPES, spelled_for
from keras_vit.model.vit import ViT
from keras_vit.validation import integer

#: Largest total size of the frozen weights (a GraphDef is limited to 2 GiB).
MAX_CONSTANT_BYTES = 2**31 - 2**26


class FrozenModel:
    """A model's inference call with its weights as graph constants.

    Attributes:
        function: the ``tf.function`` (one trace, any batch size).
        input_spec: ``tf.TensorSpec`` float32 ``(batch, height, width, channels)``.
        dtype_policy: str. The Keras dtype policy the call computes in.
        jit_compile: bool. Whether XLA compiles the call (else TensorFlow's
            graph runs it).
        batch_size: int or None. The batch size the graph is tuned for.
        native_kernels: bool. Whether the graph runs keras-vit's CPU kernels
            (``keras_vit.kernels``).
    """

    def __init__(
        self,
        function,
        input_spec,
        dtype_policy,
        jit_compile=False,
        batch_size=None,
        native_kernels=False,
    ):
        self.function = function
        self.input_spec = input_spec
        self.dtype_policy = dtype_policy
        self.jit_compile = jit_compile
        self.batch_size = batch_size
        self.native_kernels = native_kernels
        self._optimised = False

    def __call__(self, images):
        """The model's outputs (tensors) for images ``(batch, height, width, channels)``.

        The first call optimises the graph (or compiles it with XLA), which
        makes and drops several copies of the weights; after it the freed
        heap is returned to the system (``release_memory``): a frozen
        ViT-B/16 then stays resident at 4.0 GB instead of 6.2 GB (float32,
        ``benchmarks/freeze_memory.py``).

        Raises:
            ValueError: for images of another rank, size or channel count.
        """
        import tensorflow as tf

        images = tf.convert_to_tensor(images, tf.float32)
        if not self.input_spec.is_compatible_with(images):
            raise ValueError(
                f"The frozen model expects images of shape "
                f"{_shape_text(self.input_spec.shape)}; got {tuple(images.shape)}."
            )
        outputs = self.function(images)
        if not self._optimised:
            self._optimised = True
            release_memory()
        return outputs

    def predict(self, images, batch_size=None):
        """NumPy outputs for images, in batches of ``batch_size`` (``keras.Model.predict``).

        Args:
            images: array ``(n, height, width, channels)``.
            batch_size: int >= 1; by default the one the graph is tuned for
                (``freeze``'s ``batch_size``), else 32.

        Returns:
            The model's outputs as NumPy arrays, ``(n, ...)`` each.
        """
        if batch_size is None:
            batch_size = self.batch_size or 32
        batch_size = integer(batch_size, "batch_size", minimum=1)
        images = np.asarray(images, dtype="float32")
        if images.ndim == 0 or len(images) == 0:
            raise ValueError(f"Expected a batch of images; got shape {images.shape}.")
        parts = [
            keras.tree.map_structure(np.asarray, self(images[start : start + batch_size]))
            for start in range(0, len(images), batch_size)
        ]
        return keras.tree.map_structure(lambda *arrays: np.concatenate(arrays), *parts)


def freeze(model, dtype=None, jit_compile="auto", batch_size=None, native_kernels="auto"):
    """``model``'s inference call as a ``FrozenModel`` (weights as graph constants).

    Args:
        model: a built ``keras.Model`` on the TensorFlow backend: a keras-vit
            ``ViT`` (``ViT.images_spec`` gives the input shape) or a
            functional model.
        dtype: optional Keras dtype policy name to compute in, e.g.
            ``"mixed_bfloat16"`` for a float32 model, or ``"bfloat16"`` (the
            fastest bf16 graph with oneDNN) (a copy of the model with that
            policy is frozen); the model's own policy by default.
        jit_compile: True (XLA compiles the call), False (TensorFlow's
            graph, oneDNN's kernels where it runs them) or ``"auto"``: XLA
            where ``xla_is_faster_here()`` says so.
        batch_size: optional int >= 1: the batch size to tune the graph for.
            The frozen model still takes any batch size. With 1, the bf16
            oneDNN graph runs its QKV products in the form measured faster
            for one image and slower for 16 (``block_affine`` in
            ``keras_vit.model.ops``); None tunes for batches of 16 and more.
        native_kernels: True, False or ``"auto"``: whether keras-vit's CPU
            kernels (``keras_vit.kernels``: a fused LayerNorm and a fused
            self-attention, compiled here on first use) run each LayerNorm
            and each float32 self-attention. They apply to TensorFlow's oneDNN
            graph (float32, ``mixed_bfloat16`` or ``bfloat16``) on a machine
            without a GPU only (not to XLA's program). ``"auto"``
            uses them there when they build and load, and otherwise falls
            back to TensorFlow's own ops (the reason is logged at INFO);
            True raises where they do not apply or do not build.

    Returns:
        ``FrozenModel``, traced here (the weights as they are now); its first
        call optimises the graph (seconds for ViT-B/16).

    Raises:
        TypeError: for a non-Keras model.
        ValueError: for an unbuilt model, an unknown dtype policy, another
            backend, a ``jit_compile`` other than True, False or ``"auto"``,
            a ``batch_size`` that is not an int >= 1, a ``native_kernels``
            other than True, False or ``"auto"`` (or True where the kernels do
            not apply), or weights larger than ``MAX_CONSTANT_BYTES``.
        keras_vit.kernels.KernelBuildError: with ``native_kernels=True``,
            when the kernels do not compile or load here.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"freeze expects a keras.Model; got {type(model).__name__}.")
    if not _is_switch(jit_compile):
        raise ValueError(f"jit_compile must be True, False or 'auto'; got {jit_compile!r}.")
    if not _is_switch(native_kernels):
        raise ValueError(f"native_kernels must be True, False or 'auto'; got {native_kernels!r}.")
    if batch_size is not None:
        batch_size = integer(batch_size, "batch_size", minimum=1)
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"freeze needs the TensorFlow backend; Keras runs {keras.backend.backend()!r} "
            "(JAX compiles inference with XLA already: call the model)."
        )
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built; build or call it before freeze.")
    spec = _input_spec(model)
    if dtype is not None and dtype != model.dtype_policy.name:
        model = _with_policy(model, dtype)
    frozen = (model.trainable_variables, model.non_trainable_variables)
    size = sum(np.dtype(v.dtype).itemsize * math.prod(v.shape) for v in (*frozen[0], *frozen[1]))
    if size > MAX_CONSTANT_BYTES:
        raise ValueError(
            f"Model {model.name!r} has {size / 2**30:.2f} GiB of weights; a frozen graph "
            f"holds at most {MAX_CONSTANT_BYTES / 2**30:.2f} GiB of constants (TensorFlow's "
            "2 GiB GraphDef limit). Run the model itself, or export it."
        )
    import tensorflow as tf

    def constant(variable):
        with tf.init_scope():  # read eagerly; the value lives on only in the graph
            value = variable.numpy()
        return tf.constant(value)

    def call(images):
        constants = [[constant(v) for v in variables] for variables in frozen]
        outputs, _ = model.stateless_call(*constants, images, training=False)
        return outputs

    if jit_compile == "auto":
        jit_compile = xla_is_faster_here()
    function = tf.function(call, input_signature=[spec], autograph=False, jit_compile=jit_compile)
    compute_dtype = model.dtype_policy.compute_dtype
    onednn = not jit_compile and onednn_runs(compute_dtype)
    on_cpu = not tf.config.list_logical_devices("GPU")  # the kernels are CPU ops
    kernels = _kernels(
        native_kernels,
        onednn and on_cpu and any(compute_dtype in dtypes for dtypes in KERNEL_DTYPES.values()),
        jit_compile,
    )
    with spelled_for("onednn" if onednn else "default", batch_size=batch_size, kernels=kernels):
        function.get_concrete_function()  # the snapshot: traced now, not at the first call
    return FrozenModel(
        function, spec, model.dtype_policy.name, jit_compile, batch_size, kernels is not None
    )


def _is_switch(value):
    """Whether ``value`` is True, False or ``"auto"``."""
    return isinstance(value, bool) or (isinstance(value, str) and value == "auto")


def _kernels(native_kernels, applies, jit_compile):
    """keras-vit's CPU kernels module for ``freeze``'s ``native_kernels``, or None.

    ``applies``: the graph is TensorFlow's oneDNN graph in one of the
    kernels' ``KERNEL_DTYPES``, on a machine
    without a GPU (where the graph's ops run on the GPU, a CPU op between
    them would copy its tensors there and back).
    """
    if native_kernels is False or (native_kernels == "auto" and not applies):
        return None
    if not applies:
        where = "XLA's program" if jit_compile else "this graph"
        raise ValueError(
            "native_kernels=True needs TensorFlow's oneDNN graph on a machine without a GPU "
            f"(a float32 or bfloat16 compute dtype, jit_compile=False, oneDNN on); {where} does "
            "not run them."
        )
    try:
        return native.load()
    except native.KernelBuildError as error:
        if native_kernels is True:
            raise
        logger.info("freeze runs TensorFlow's own LayerNorm and attention ops: %s", error)
        return None


def xla_is_faster_here():
    """Whether ``freeze(jit_compile="auto")`` compiles with XLA on this machine.

    True on a machine without a GPU whose TensorFlow does not run bfloat16
    with oneDNN (``onednn_runs("bfloat16")``: no AVX-512, or oneDNN off).
    There XLA's whole-model program was measured faster than TensorFlow's
    graph in float32 and bf16 (an AVX2 AMD EPYC: module docstring). Where
    TensorFlow's oneDNN runs bfloat16 (AVX-512, AMX) its graph stays, as
    measured faster in float32 and bf16 (an AVX512-BF16 AMD EPYC); with a GPU
    the graph stays too (not measured).

    Returns:
        bool.
    """
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU") and not onednn_runs("bfloat16")


def onednn_runs(dtype="float32"):
    """Whether TensorFlow runs its oneDNN kernels on tensors of ``dtype`` here.

    oneDNN must be on (``TF_ENABLE_ONEDNN_OPTS``, the CPU's default) and
    take ``dtype`` on this CPU: TensorFlow's own test, under which bfloat16
    needs AVX-512 (elsewhere its bfloat16 ops fall back to Eigen's kernels,
    which neither fuse the oneDNN spelling's LayerNorm nor compute a
    bfloat16 softmax in float32).

    Args:
        dtype: str. A dtype name, e.g. a policy's ``compute_dtype``.

    Returns:
        bool; False where this TensorFlow build cannot tell.
    """
    import tensorflow as tf

    try:
        from tensorflow.python.util import _pywrap_util_port, _pywrap_utils
    except ImportError:  # a TensorFlow build without the switches
        return False
    supported = getattr(_pywrap_utils, "IsDataTypeSupportedByOneDNNOnThisCPU", None)
    if not _pywrap_util_port.IsMklEnabled() or supported is None:
        return False
    return bool(supported(tf.as_dtype(dtype).as_datatype_enum))


def _input_spec(model):
    """``TensorSpec`` float32 of the model's single image input, batch dynamic."""
    import tensorflow as tf

    if isinstance(model, ViT):
        return model.images_spec()
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        raise ValueError(
            f"freeze needs a ViT or a functional model with one input; {model.name!r} "
            f"has {len(inputs)} symbolic inputs."
        )
    return tf.TensorSpec((None, *tuple(inputs[0].shape)[1:]), tf.float32, name="images")


def _with_policy(model, dtype):
    """A copy of ``model`` computing under dtype policy ``dtype``, with its weights."""
    try:
        policy = keras.DTypePolicy(dtype)
    except ValueError as error:
        raise ValueError(
            f"dtype must be a Keras dtype policy name (e.g. 'float32', 'mixed_bfloat16'); "
            f"got {dtype!r}."
        ) from error
    config = model.get_config()
    if "dtype" not in config:
        raise ValueError(
            f"Model {model.name!r} has no dtype in its config; build it under the dtype "
            "policy you want and freeze it without dtype."
        )
    copy = model.__class__.from_config({**config, "dtype": policy.name})
    copy.set_weights(model.get_weights())
    return copy


def _shape_text(shape):
    return "(" + ", ".join("any" if d is None else str(d) for d in shape) + ")"
