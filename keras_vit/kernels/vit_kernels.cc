// keras-vit's CPU kernels for frozen inference (keras_vit.kernels).
//
// KerasVitLayerNorm: LayerNorm over the last axis, one pass per row kept in
//   L1: x (..., D) float32 or bfloat16, gamma (D,), beta (D,) float32 ->
//   (..., D) of type U. Statistics, scale and offset in float32, the
//   variance of the centred values (as keras.ops.layer_normalization); a
//   bfloat16 output is rounded once, to nearest even. U may differ from x's
//   type (a float32 stream normalised for a bf16 GEMM).
// KerasVitAddLayerNorm: a residual add and the LayerNorm after it, in one
//   pass per row: stream (..., D) float32 + branch (..., D) float32 or
//   bfloat16 -> the sum (float32) and its LayerNorm (type U).
// KerasVitSelfAttention (float32): softmax(q k^T) v for every (image, head), read from
//   the fused QKV GEMM's output as it lies and written in the layout the
//   output projection takes: qkv (B, T, 3 * W) -> (B, T, W), W = heads *
//   head_dim, qkv's last axis [query | key | value], each head-major
//   (head * head_dim + d), the query already scaled by 1 / sqrt(head_dim).
//   No transposes. Per head, the key is copied transposed and the value
//   packed (float32, rows adjacent), then kRows query rows at a time go
//   through both products and the softmax while their (kRows, T) weights
//   stay in L1 (attend_head).
//
// Each splits its rows (or images x heads) into one contiguous chunk per
// intra-op thread (run_in_chunks), or runs inline when the work is small.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/bfloat16.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/platform/blocking_counter.h"
#include "tensorflow/core/platform/threadpool.h"

namespace keras_vit {
namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::bfloat16;

// float32 <-> the tensor's type, in forms the compiler vectorises.
inline float to_float(float x) { return x; }
inline float to_float(bfloat16 x) {
  uint16_t half;
  std::memcpy(&half, &x, sizeof(half));
  const uint32_t bits = uint32_t{half} << 16;
  float y;
  std::memcpy(&y, &bits, sizeof(y));
  return y;
}
inline void store_as(float x, float* out) { *out = x; }
inline void store_as(float x, bfloat16* out) {  // round to nearest even; NaN stays NaN
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  const uint16_t half = x != x ? uint16_t{0x7fc0}
                               : static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
  std::memcpy(out, &half, sizeof(half));
}

// The widest float vector of the target (GCC / Clang vector extensions), and
// the register tile of the attention's products: kRows query rows by two
// vectors of columns, 16 accumulators with AVX-512's 32 registers, 8 with
// AVX2's 16.
#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kRows = 8;
#elif defined(__AVX__)
constexpr int kLanes = 8;
constexpr int kRows = 4;
#else
constexpr int kLanes = 4;
constexpr int kRows = 4;
#endif
constexpr int kTileVectors = 2;
constexpr int64_t kTileColumns = kTileVectors * kLanes;
typedef float Vector __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IntVector __attribute__((vector_size(kLanes * sizeof(float))));
typedef float UnalignedVector
    __attribute__((vector_size(kLanes * sizeof(float)), aligned(sizeof(float))));

inline Vector load(const float* p) { return *reinterpret_cast<const UnalignedVector*>(p); }
inline void store(float* p, Vector v) { *reinterpret_cast<UnalignedVector*>(p) = v; }
inline int64_t round_up(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }
inline Vector splat(float x) { return Vector{} + x; }

// exp(x) for the softmax's x <= 0, lane by lane: x = n ln2 + r,
// |r| <= ln2 / 2, exp(r) by Cephes' degree-6 polynomial, 2^n from the
// exponent bits. x is clamped at -87: exp(-87) ~ 1.6e-38, next to a row
// maximum's exp(0) = 1 the same as 0 in a float32 sum.
inline Vector exp_nonpositive(Vector x) {
  const Vector floor = splat(-87.0f);
  const Vector xc = x < floor ? floor : x;
  const Vector kRound = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const Vector n = (xc * 1.44269504088896341f + kRound) - kRound;
  const Vector r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;  // ln2 in two parts
  Vector p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const Vector y = p * r * r + r + 1.0f;
  const IntVector exponent = (__builtin_convertvector(n, IntVector) + 127) << 23;
  return y * (Vector)exponent;  // the same bits, read as floats
}

// Softmax numerators exp(x - max x) of a row of `width` floats (a multiple
// of kLanes), in place; returns the inverse of their sum.
inline float softmax_numerators(float* row, int64_t width) {
  Vector peaks = load(row);
  for (int64_t j = kLanes; j < width; j += kLanes) {
    const Vector x = load(row + j);
    peaks = peaks > x ? peaks : x;
  }
  float peak = peaks[0];
  for (int l = 1; l < kLanes; ++l) peak = std::max(peak, peaks[l]);
  Vector totals = {};
  for (int64_t j = 0; j < width; j += kLanes) {
    const Vector e = exp_nonpositive(load(row + j) - peak);
    store(row + j, e);
    totals += e;
  }
  float total = 0.0f;
  for (int l = 0; l < kLanes; ++l) total += totals[l];
  return 1.0f / total;
}

// c[r][j] = sum_k a[r][k] b[k][j] for a tile of kRows rows of a (row r at
// a_rows[r]) and all columns of b (depth rows, row-major, ldb apart,
// columns a multiple of kTileColumns): c (kRows, ldc).
inline void product_tile(const float* const* a_rows, const float* b, int64_t depth,
                         int64_t columns, int64_t ldb, float* c, int64_t ldc) {
  for (int64_t j0 = 0; j0 < columns; j0 += kTileColumns) {
    Vector acc[kRows][kTileVectors] = {};
    for (int64_t k = 0; k < depth; ++k) {
      Vector bk[kTileVectors];
      for (int v = 0; v < kTileVectors; ++v) bk[v] = load(b + k * ldb + j0 + v * kLanes);
      for (int r = 0; r < kRows; ++r) {
        const float ar = a_rows[r][k];
        for (int v = 0; v < kTileVectors; ++v) acc[r][v] += ar * bk[v];
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (int v = 0; v < kTileVectors; ++v) store(c + r * ldc + j0 + v * kLanes, acc[r][v]);
  }
}

// Per-thread float32 buffers of attend_head for (tokens, head_dim).
struct AttentionScratch {
  AttentionScratch(int64_t tokens, int64_t head_dim)
      : keys_width(round_up(tokens, kTileColumns)),
        values_width(round_up(head_dim, kTileColumns)),
        keys(head_dim * keys_width),              // k^T, zero past `tokens`
        values(tokens * values_width),            // v, zero past `head_dim`
        weights(kRows * keys_width),              // a tile's (kRows, tokens)
        attended(kRows * values_width) {}         // a tile's (kRows, head_dim)
  int64_t keys_width, values_width;
  std::vector<float> keys, values, weights, attended;
};

// softmax(q k^T) v of one (image, head): q, k, v (tokens, head_dim), rows
// `stride` apart; out (tokens, head_dim), rows `out_stride` apart.
void attend_head(const float* q, const float* k, const float* v, int64_t stride,
                 int64_t tokens, int64_t head_dim, float* out, int64_t out_stride,
                 AttentionScratch& s) {
  const int64_t kw = s.keys_width, vw = s.values_width;
  float* keys = s.keys.data();
  float* values = s.values.data();
  for (int64_t j = 0; j < tokens; ++j) {  // k^T; v with its rows adjacent
    for (int64_t d = 0; d < head_dim; ++d) keys[d * kw + j] = k[j * stride + d];
    std::copy(v + j * stride, v + j * stride + head_dim, values + j * vw);
  }
  float* weights = s.weights.data();
  float* attended = s.attended.data();
  for (int64_t i0 = 0; i0 < tokens; i0 += kRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kRows, tokens - i0));
    const float* query_rows[kRows];
    const float* weight_rows[kRows];
    for (int r = 0; r < kRows; ++r) {
      query_rows[r] = q + (i0 + std::min(r, rows - 1)) * stride;  // the last row again
      weight_rows[r] = weights + r * kw;
    }
    product_tile(query_rows, keys, head_dim, kw, kw, weights, kw);
    float inverse[kRows];
    for (int r = 0; r < rows; ++r) {  // padding columns left out of the softmax
      float* row = weights + r * kw;
      std::fill(row + tokens, row + kw, -INFINITY);
      inverse[r] = softmax_numerators(row, kw);
    }
    product_tile(weight_rows, values, tokens, vw, vw, attended, vw);
    for (int r = 0; r < rows; ++r) {
      float* o = out + (i0 + r) * out_stride;
      const float* a = attended + r * vw;
      const float scale = inverse[r];
#pragma omp simd
      for (int64_t d = 0; d < head_dim; ++d) o[d] = a[d] * scale;
    }
  }
}

// Work below this many element operations runs on the calling thread alone:
// waking a sleeping pool thread and being woken again cost about 140 us a
// call on a 2-core VM, more than a 197 x 768 LayerNorm takes (about 55 us).
constexpr int64_t kInlineWork = int64_t{1} << 20;

// Runs fn(begin, end) over [0, total) items of about `cost` element
// operations each: inline when small, else in one contiguous chunk per
// intra-op thread on the intra-op pool, the calling (inter-op) thread
// waiting. (With the caller running a chunk itself, the 12 heads of one
// image took 1.0-1.05x TensorFlow's own attention ops' time instead of
// 0.84-0.86x: a third thread on two cores.)
template <typename Fn>
void run_in_chunks(OpKernelContext* c, int64_t total, int64_t cost, const Fn& fn) {
  auto* workers = c->device()->tensorflow_cpu_worker_threads();
  const int64_t chunks = std::min<int64_t>(workers->num_threads, total);
  if (chunks <= 1 || total * cost < kInlineWork) {
    fn(0, total);
    return;
  }
  tensorflow::BlockingCounter done(chunks);
  for (int64_t i = 0; i < chunks; ++i) {
    const int64_t begin = total * i / chunks, end = total * (i + 1) / chunks;
    workers->workers->Schedule([&fn, &done, begin, end] {
      fn(begin, end);
      done.DecrementCount();
    });
  }
  done.Wait();
}

// LayerNorm of one row x (d,) into y (d,): statistics, scale and offset in
// float32, y rounded once to its type.
template <typename In, typename Out>
void normalize_row(const In* x, const float* gamma, const float* beta, int64_t d,
                   float epsilon, Out* y) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < d; ++i) sum += to_float(x[i]);
  const float mean = sum / d;
  float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
  for (int64_t i = 0; i < d; ++i) {
    const float centred = to_float(x[i]) - mean;
    squares += centred * centred;
  }
  const float inverse = 1.0f / std::sqrt(squares / d + epsilon);
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) store_as((to_float(x[i]) - mean) * inverse * gamma[i] + beta[i], y + i);
}

// The checks both LayerNorm ops make of x (..., D), gamma and beta.
absl::Status check_layer_norm(const char* op, const Tensor& x, const Tensor& gamma,
                              const Tensor& beta) {
  if (x.dims() < 1) return absl::InvalidArgumentError(absl::StrCat(op, ": x must have rank >= 1"));
  const int64_t d = x.dim_size(x.dims() - 1);
  if (gamma.NumElements() != d || beta.NumElements() != d)
    return absl::InvalidArgumentError(absl::StrCat(op, ": gamma and beta must have ", d,
                                                   " values, got ", gamma.NumElements(),
                                                   " and ", beta.NumElements()));
  return absl::OkStatus();
}

}  // namespace

// The kernel of a LayerNorm op: its epsilon attribute.
class NormOp : public OpKernel {
 public:
  explicit NormOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("epsilon", &epsilon_));
  }

 protected:
  float epsilon_;
};

REGISTER_OP("KerasVitLayerNorm")
    .Input("x: T")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("y: U")
    .Attr("T: {float, bfloat16}")
    .Attr("U: {float, bfloat16}")
    .Attr("epsilon: float")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);

// x (..., D) of type T -> y (..., D) of type U.
template <typename T, typename U>
class LayerNormOp : public NormOp {
 public:
  using NormOp::NormOp;

  void Compute(OpKernelContext* c) override {
    const Tensor& x = c->input(0);
    const Tensor& gamma = c->input(1);
    const Tensor& beta = c->input(2);
    OP_REQUIRES_OK(c, check_layer_norm("KerasVitLayerNorm", x, gamma, beta));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(c, c->allocate_output(0, x.shape(), &y));
    const int64_t d = x.dim_size(x.dims() - 1);
    if (d == 0 || x.NumElements() == 0) return;
    const T* xp = x.flat<T>().data();
    const float* gp = gamma.flat<float>().data();
    const float* bp = beta.flat<float>().data();
    U* yp = y->flat<U>().data();
    const float epsilon = epsilon_;
    run_in_chunks(c, x.NumElements() / d, 4 * d, [=](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) normalize_row(xp + r * d, gp, bp, d, epsilon, yp + r * d);
    });
  }
};

REGISTER_OP("KerasVitAddLayerNorm")
    .Input("stream: float")
    .Input("branch: B")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("sum: float")
    .Output("y: U")
    .Attr("B: {float, bfloat16}")
    .Attr("U: {float, bfloat16}")
    .Attr("epsilon: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle shape;
      TF_RETURN_IF_ERROR(c->Merge(c->input(0), c->input(1), &shape));
      c->set_output(0, shape);
      c->set_output(1, shape);
      return absl::OkStatus();
    });

// A residual add and the LayerNorm after it, in one pass per row: stream
// (..., D) float32 + branch (..., D) of type B -> sum (float32) and
// y = LayerNorm(sum) of type U.
template <typename B, typename U>
class AddLayerNormOp : public NormOp {
 public:
  using NormOp::NormOp;

  void Compute(OpKernelContext* c) override {
    const Tensor& stream = c->input(0);
    const Tensor& branch = c->input(1);
    const Tensor& gamma = c->input(2);
    const Tensor& beta = c->input(3);
    OP_REQUIRES(c, stream.shape() == branch.shape(),
                absl::InvalidArgumentError(absl::StrCat(
                    "KerasVitAddLayerNorm: stream and branch must have one shape, got ",
                    stream.shape().DebugString(), " and ", branch.shape().DebugString())));
    OP_REQUIRES_OK(c, check_layer_norm("KerasVitAddLayerNorm", stream, gamma, beta));
    Tensor* sum = nullptr;
    Tensor* y = nullptr;
    OP_REQUIRES_OK(c, c->allocate_output(0, stream.shape(), &sum));
    OP_REQUIRES_OK(c, c->allocate_output(1, stream.shape(), &y));
    const int64_t d = stream.dim_size(stream.dims() - 1);
    if (d == 0 || stream.NumElements() == 0) return;
    const float* streams = stream.flat<float>().data();
    const B* branches = branch.flat<B>().data();
    const float* gp = gamma.flat<float>().data();
    const float* bp = beta.flat<float>().data();
    float* total = sum->flat<float>().data();
    U* yp = y->flat<U>().data();
    const float epsilon = epsilon_;
    run_in_chunks(c, stream.NumElements() / d, 5 * d, [=](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        float* row = total + r * d;
#pragma omp simd
        for (int64_t i = 0; i < d; ++i) row[i] = streams[r * d + i] + to_float(branches[r * d + i]);
        normalize_row(row, gp, bp, d, epsilon, yp + r * d);
      }
    });
  }
};

REGISTER_OP("KerasVitSelfAttention")
    .Input("qkv: float")
    .Output("attended: float")
    .Attr("num_heads: int >= 1")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle qkv;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &qkv));
      tensorflow::shape_inference::DimensionHandle width;
      TF_RETURN_IF_ERROR(c->Divide(c->Dim(qkv, 2), 3, true, &width));
      tensorflow::shape_inference::ShapeHandle out;
      TF_RETURN_IF_ERROR(c->ReplaceDim(qkv, 2, width, &out));
      c->set_output(0, out);
      return absl::OkStatus();
    });

class SelfAttentionOp : public OpKernel {
 public:
  explicit SelfAttentionOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("num_heads", &num_heads_));
  }

  void Compute(OpKernelContext* c) override {
    const Tensor& qkv = c->input(0);
    OP_REQUIRES(c, qkv.dims() == 3,
                absl::InvalidArgumentError(absl::StrCat(
                    "KerasVitSelfAttention: qkv must be (batch, tokens, 3 * width), got rank ",
                    qkv.dims())));
    const int64_t batch = qkv.dim_size(0), tokens = qkv.dim_size(1);
    const int64_t packed = qkv.dim_size(2), heads = num_heads_;
    OP_REQUIRES(c, packed % (3 * heads) == 0,
                absl::InvalidArgumentError(absl::StrCat(
                    "KerasVitSelfAttention: the last dimension (", packed,
                    ") must be a multiple of 3 * num_heads = ", 3 * heads)));
    const int64_t width = packed / 3, head_dim = width / heads;
    Tensor* attended = nullptr;
    OP_REQUIRES_OK(c, c->allocate_output(
                          0, tensorflow::TensorShape({batch, tokens, width}), &attended));
    if (attended->NumElements() == 0) return;
    const float* in = qkv.flat<float>().data();
    float* out = attended->flat<float>().data();
    auto attend = [=](int64_t begin, int64_t end) {
      AttentionScratch scratch(tokens, head_dim);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / heads, h = item % heads;
        const float* base = in + b * tokens * packed + h * head_dim;
        attend_head(base, base + width, base + 2 * width, packed, tokens, head_dim,
                    out + b * tokens * width + h * head_dim, width, scratch);
      }
    };
    run_in_chunks(c, batch * heads, 4 * tokens * tokens * head_dim, attend);
  }

 private:
  int num_heads_;
};

#define KERAS_VIT_REGISTER_NORMS(In, Out)                                         \
  REGISTER_KERNEL_BUILDER(Name("KerasVitLayerNorm")                              \
                              .Device(tensorflow::DEVICE_CPU)                    \
                              .TypeConstraint<In>("T")                           \
                              .TypeConstraint<Out>("U"),                         \
                          LayerNormOp<In, Out>);                                 \
  REGISTER_KERNEL_BUILDER(Name("KerasVitAddLayerNorm")                           \
                              .Device(tensorflow::DEVICE_CPU)                    \
                              .TypeConstraint<In>("B")                           \
                              .TypeConstraint<Out>("U"),                         \
                          AddLayerNormOp<In, Out>);
KERAS_VIT_REGISTER_NORMS(float, float)
KERAS_VIT_REGISTER_NORMS(float, bfloat16)
KERAS_VIT_REGISTER_NORMS(bfloat16, float)
KERAS_VIT_REGISTER_NORMS(bfloat16, bfloat16)
#undef KERAS_VIT_REGISTER_NORMS
REGISTER_KERNEL_BUILDER(Name("KerasVitSelfAttention").Device(tensorflow::DEVICE_CPU),
                        SelfAttentionOp);

}  // namespace keras_vit
