"""keras-vit's CPU kernels: a fused LayerNorm and a fused self-attention for inference.

TensorFlow's oneDNN graph runs each LayerNorm as ``_MklLayerNorm``,
which sets up its oneDNN primitives at every call (164 us for a 197 x 768
input), and attention as two batched products, a softmax and the
transposes between them. Two small C++ ops take their place in what
``keras_vit.freeze`` traces (``native_kernels``):

- ``keras_vit_layer_norm(x, gamma, beta, epsilon=...)``: ``(..., D) ->
  (..., D)``, ``gamma`` and ``beta`` ``(D,)`` float32;
- ``keras_vit_self_attention(qkv, num_heads=...)``: the fused QKV GEMM's
  output ``(B, T, 3 W)`` -> the attended values ``(B, T, W)``, read and
  written without transposes.

Both take float32 or bfloat16 tensors and compute in float32, rounding a
bfloat16 output once.

They are compiled on first use (``build``) and kept in the cache
(``library``). Only the in-process frozen graph uses them: no export
contains them.
"""

from keras_vit.kernels.build import KernelBuildError
from keras_vit.kernels.library import load

__all__ = ["KernelBuildError", "load"]
