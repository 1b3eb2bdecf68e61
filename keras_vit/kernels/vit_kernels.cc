// keras-vit's CPU kernels for frozen float32 inference (keras_vit.kernels).
//
// KerasVitLayerNorm: LayerNorm over the last axis, one pass per row kept in
//   L1: x (..., D), gamma (D,), beta (D,) -> (..., D). Statistics in float32,
//   the variance of the centred values (as keras.ops.layer_normalization).
// KerasVitSelfAttention: softmax(q k^T) v for every (image, head), read from
//   the fused QKV GEMM's output as it lies and written in the layout the
//   output projection takes: qkv (B, T, 3 * W) -> (B, T, W), W = heads *
//   head_dim, qkv's last axis [query | key | value], each head-major
//   (head * head_dim + d), the query already scaled by 1 / sqrt(head_dim).
//   No transposes, and the (T, T) weights stay in cache between the two
//   products and the softmax.
//
// Both split their rows (images x heads) into one contiguous chunk per
// intra-op thread (run_in_chunks), or run inline when the work is small.
#define EIGEN_DONT_PARALLELIZE
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

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

// exp(x) for the softmax's x <= 0, in a form the compiler vectorises:
// x = n ln2 + r, |r| <= ln2 / 2, exp(r) by Cephes' degree-6 polynomial,
// 2^n from the exponent bits; 0 below float's normal range.
inline float exp_nonpositive(float x) {
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  const float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float xc = std::max(x, -87.0f);
  const float n = (xc * kLog2e + kRound) - kRound;
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.0f ? 0.0f : y * scale;
}

// Softmax of each row of a (rows, n) row-major block, in place.
void softmax_rows(float* s, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * n;
    float peak = row[0];
#pragma omp simd reduction(max : peak)
    for (int64_t i = 0; i < n; ++i) peak = row[i] > peak ? row[i] : peak;
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int64_t i = 0; i < n; ++i) {
      row[i] = exp_nonpositive(row[i] - peak);
      total += row[i];
    }
    const float inverse = 1.0f / total;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) row[i] *= inverse;
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

}  // namespace

REGISTER_OP("KerasVitLayerNorm")
    .Input("x: float")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("y: float")
    .Attr("epsilon: float")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);

class LayerNormOp : public OpKernel {
 public:
  explicit LayerNormOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* c) override {
    const Tensor& x = c->input(0);
    const Tensor& gamma = c->input(1);
    const Tensor& beta = c->input(2);
    OP_REQUIRES(c, x.dims() >= 1,
                absl::InvalidArgumentError("KerasVitLayerNorm: x must have rank >= 1"));
    const int64_t d = x.dim_size(x.dims() - 1);
    OP_REQUIRES(c, gamma.NumElements() == d && beta.NumElements() == d,
                absl::InvalidArgumentError(absl::StrCat(
                    "KerasVitLayerNorm: gamma and beta must have ", d, " values, got ",
                    gamma.NumElements(), " and ", beta.NumElements())));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(c, c->allocate_output(0, x.shape(), &y));
    if (d == 0 || x.NumElements() == 0) return;
    const int64_t rows = x.NumElements() / d;
    const float* xp = x.flat<float>().data();
    const float* gp = gamma.flat<float>().data();
    const float* bp = beta.flat<float>().data();
    float* yp = y->flat<float>().data();
    const float epsilon = epsilon_;
    auto normalize = [=](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const float* xr = xp + r * d;
        float* yr = yp + r * d;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < d; ++i) sum += xr[i];
        const float mean = sum / d;
        float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
        for (int64_t i = 0; i < d; ++i) {
          const float centred = xr[i] - mean;
          squares += centred * centred;
        }
        const float inverse = 1.0f / std::sqrt(squares / d + epsilon);
#pragma omp simd
        for (int64_t i = 0; i < d; ++i) yr[i] = (xr[i] - mean) * inverse * gp[i] + bp[i];
      }
    };
    run_in_chunks(c, rows, 4 * d, normalize);
  }

 private:
  float epsilon_;
};

REGISTER_KERNEL_BUILDER(Name("KerasVitLayerNorm").Device(tensorflow::DEVICE_CPU), LayerNormOp);

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
    using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Rows = Eigen::Map<const Matrix, 0, Eigen::OuterStride<>>;
    using OutRows = Eigen::Map<Matrix, 0, Eigen::OuterStride<>>;
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
      std::vector<float> scores(tokens * tokens);
      Eigen::Map<Matrix> weights(scores.data(), tokens, tokens);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / heads, h = item % heads;
        const float* base = in + b * tokens * packed + h * head_dim;
        Rows q(base, tokens, head_dim, Eigen::OuterStride<>(packed));
        Rows k(base + width, tokens, head_dim, Eigen::OuterStride<>(packed));
        Rows v(base + 2 * width, tokens, head_dim, Eigen::OuterStride<>(packed));
        weights.noalias() = q * k.transpose();
        softmax_rows(scores.data(), tokens, tokens);
        OutRows o(out + b * tokens * width + h * head_dim, tokens, head_dim,
                  Eigen::OuterStride<>(width));
        o.noalias() = weights * v;
      }
    };
    run_in_chunks(c, batch * heads, 4 * tokens * tokens * head_dim, attend);
  }

 private:
  int num_heads_;
};

REGISTER_KERNEL_BUILDER(Name("KerasVitSelfAttention").Device(tensorflow::DEVICE_CPU),
                        SelfAttentionOp);

}  // namespace keras_vit
