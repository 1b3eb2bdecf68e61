"""keras-vit's CPU kernels: fused LayerNorms and a fused self-attention for inference.

TensorFlow's oneDNN graph runs each LayerNorm as ``_MklLayerNorm``,
which sets up its oneDNN primitives at every call (164 us for a 197 x 768
input), each residual add before a LayerNorm as an op of its own, and
attention as two batched products, a softmax and the transposes between
them. Three small C++ ops take their place in what ``keras_vit.freeze``
traces (``native_kernels``):

- ``keras_vit_layer_norm(x, gamma, beta, epsilon=..., U=...)``: ``(..., D)``
  float32 or bfloat16 -> ``(..., D)`` of dtype ``U``;
- ``keras_vit_add_layer_norm(stream, branch, gamma, beta, epsilon=...,
  U=...)``: a float32 ``stream`` plus a float32 or bfloat16 ``branch``, both
  ``(..., D)`` -> their float32 sum and its LayerNorm of dtype ``U``;
- ``keras_vit_self_attention(qkv, num_heads=...)``: the fused QKV GEMM's
  float32 output ``(B, T, 3 W)`` -> the attended values ``(B, T, W)``, read
  and written without transposes.

``gamma`` and ``beta`` are ``(D,)`` float32. All compute in float32 and
round a bfloat16 output once, to nearest even.

They are compiled on first use (``build``) and kept in the cache
(``library``). Only the in-process frozen graph uses them: no export
contains them.
"""

from keras_vit.kernels.build import KernelBuildError
from keras_vit.kernels.library import load

__all__ = ["KernelBuildError", "load"]
