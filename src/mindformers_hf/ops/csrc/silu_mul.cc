// SwiGLU's elementwise part, y = silu(gate) * up = gate * sigmoid(gate) * up, and its gradient:
//   dgate = dy * up * s * (1 + gate * (1 - s)),   dup = dy * gate * s,   s = sigmoid(gate)
#include "common.h"

constexpr int64_t kChunk = 16384;  // elements per parallel task

// inputs: gate, up (same shape); output: y
MFH_KERNEL silu_mul_fwd(MFH_ARGS) {
  if (!mfh::all_float32(3, dtypes)) return 1;
  int64_t n = mfh::numel(ndims[0], shapes[0]);
  const float *g = static_cast<float *>(params[0]), *u = static_cast<float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  const int64_t tasks = (n + kChunk - 1) / kChunk;
  mfh::parallel_for(tasks, mfh::threads_for(tasks, kChunk * 20.0), [&](int64_t task, int) {
    const int64_t end = std::min(n, (task + 1) * kChunk);
#pragma omp simd
    for (int64_t i = task * kChunk; i < end; ++i) y[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
  });
  return 0;
}

// inputs: gate, up, dy; outputs: dgate, dup
MFH_KERNEL silu_mul_bwd(MFH_ARGS) {
  if (!mfh::all_float32(5, dtypes)) return 1;
  int64_t n = mfh::numel(ndims[0], shapes[0]);
  const float *g = static_cast<float *>(params[0]), *u = static_cast<float *>(params[1]);
  const float *dy = static_cast<float *>(params[2]);
  float *dg = static_cast<float *>(params[3]), *du = static_cast<float *>(params[4]);
  const int64_t tasks = (n + kChunk - 1) / kChunk;
  mfh::parallel_for(tasks, mfh::threads_for(tasks, kChunk * 30.0), [&](int64_t task, int) {
    const int64_t end = std::min(n, (task + 1) * kChunk);
#pragma omp simd
    for (int64_t i = task * kChunk; i < end; ++i) {
      float s = 1.f / (1.f + std::exp(-g[i]));
      dg[i] = dy[i] * u[i] * s * (1.f + g[i] * (1.f - s));
      du[i] = dy[i] * g[i] * s;
    }
  });
  return 0;
}
