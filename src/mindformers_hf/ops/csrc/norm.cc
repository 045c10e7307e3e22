// RMSNorm and residual-add + RMSNorm, forward and backward, over the last axis of a float32 tensor.
//   y = w * x * rstd,  rstd = 1 / sqrt(mean(x^2) + eps)      (HF's LlamaRMSNorm in float32)
// Backward, with g = dy * w:
//   dx = rstd * g - x * rstd^3 * mean(g * x),   dw = sum over rows of dy * x * rstd
#include "common.h"

namespace {

constexpr int64_t kRowChunk = 64;  // rows per parallel task

void rms_rows(const float *x, const float *w, float eps, float *y, float *rstd, int64_t rows, int64_t d) {
  const int64_t tasks = (rows + kRowChunk - 1) / kRowChunk;
  mfh::parallel_for(tasks, mfh::threads_for(tasks, 3.0 * d * kRowChunk), [&](int64_t task, int) {
    for (int64_t r = task * kRowChunk; r < std::min(rows, (task + 1) * kRowChunk); ++r) {
      const float *xr = x + r * d;
      float *yr = y + r * d;
      float inv = 1.f / std::sqrt(mfh::dot(xr, xr, d) / (float)d + eps);
      rstd[r] = inv;
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) yr[i] = w[i] * (xr[i] * inv);
    }
  });
}

}  // namespace

// inputs: x [..., D], w [D], eps [1]; outputs: y [..., D], rstd [rows]
MFH_KERNEL rms_norm_fwd(MFH_ARGS) {
  if (!mfh::all_float32(5, dtypes)) return 1;
  int64_t d = shapes[0][ndims[0] - 1];
  int64_t rows = mfh::numel(ndims[0], shapes[0]) / d;
  float eps = static_cast<float *>(params[2])[0];
  rms_rows(static_cast<float *>(params[0]), static_cast<float *>(params[1]), eps, static_cast<float *>(params[3]),
           static_cast<float *>(params[4]), rows, d);
  return 0;
}

// inputs: x [..., D], residual [..., D], w [D], eps [1]; outputs: y [..., D], x + residual [..., D], rstd [rows]
MFH_KERNEL add_rms_norm_fwd(MFH_ARGS) {
  if (!mfh::all_float32(7, dtypes)) return 1;
  int64_t d = shapes[0][ndims[0] - 1];
  int64_t n = mfh::numel(ndims[0], shapes[0]);
  const float *x = static_cast<float *>(params[0]);
  const float *res = static_cast<float *>(params[1]);
  float *sum = static_cast<float *>(params[5]);
  for (int64_t i = 0; i < n; ++i) sum[i] = x[i] + res[i];
  rms_rows(sum, static_cast<float *>(params[2]), static_cast<float *>(params[3])[0], static_cast<float *>(params[4]),
           static_cast<float *>(params[6]), n / d, d);
  return 0;
}

// inputs: x [..., D], w [D], rstd [rows], dy [..., D]; outputs: dx [..., D], dw [D]
MFH_KERNEL rms_norm_bwd(MFH_ARGS) {
  if (!mfh::all_float32(6, dtypes)) return 1;
  int64_t d = shapes[0][ndims[0] - 1];
  int64_t rows = mfh::numel(ndims[0], shapes[0]) / d;
  const float *x = static_cast<float *>(params[0]);
  const float *w = static_cast<float *>(params[1]);
  const float *rstd = static_cast<float *>(params[2]);
  const float *dy = static_cast<float *>(params[3]);
  float *dx = static_cast<float *>(params[4]);
  float *dw = static_cast<float *>(params[5]);
  const int64_t tasks = (rows + kRowChunk - 1) / kRowChunk;
  const int nt = mfh::threads_for(tasks, 6.0 * d * kRowChunk);
  // Each thread sums its rows' dw into a private slice; the slices are added at the end (no atomics).
  std::vector<float> partial((size_t)nt * d, 0.f);
  mfh::parallel_for(tasks, nt, [&](int64_t task, int thread) {
    float *dw_t = partial.data() + (size_t)thread * d;
    for (int64_t r = task * kRowChunk; r < std::min(rows, (task + 1) * kRowChunk); ++r) {
      const float *xr = x + r * d, *dyr = dy + r * d;
      float *dxr = dx + r * d;
      float inv = rstd[r];
      float gx = 0.f;
#pragma omp simd reduction(+ : gx)
      for (int64_t i = 0; i < d; ++i) gx += dyr[i] * w[i] * xr[i];
      float coef = gx * inv * inv * inv / (float)d;
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) {
        dxr[i] = inv * dyr[i] * w[i] - xr[i] * coef;
        dw_t[i] += dyr[i] * xr[i] * inv;
      }
    }
  });
  for (int64_t i = 0; i < d; ++i) {
    float s = 0.f;
    for (int t = 0; t < nt; ++t) s += partial[(size_t)t * d + i];
    dw[i] = s;
  }
  return 0;
}
