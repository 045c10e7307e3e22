// SwiGLU's elementwise part, y = silu(gate) * up = gate * sigmoid(gate) * up, and its gradient:
//   dgate = dy * up * s * (1 + gate * (1 - s)),   dup = dy * gate * s,   s = sigmoid(gate)
#include "common.h"

// inputs: gate, up (same shape); output: y
MFH_KERNEL silu_mul_fwd(MFH_ARGS) {
  if (!mfh::all_float32(3, dtypes)) return 1;
  int64_t n = mfh::numel(ndims[0], shapes[0]);
  const float *g = static_cast<float *>(params[0]), *u = static_cast<float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  int nt = mfh::threads_for(n / 4096 + 1, 4096 * 20.0);
#pragma omp parallel for simd num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
  return 0;
}

// inputs: gate, up, dy; outputs: dgate, dup
MFH_KERNEL silu_mul_bwd(MFH_ARGS) {
  if (!mfh::all_float32(5, dtypes)) return 1;
  int64_t n = mfh::numel(ndims[0], shapes[0]);
  const float *g = static_cast<float *>(params[0]), *u = static_cast<float *>(params[1]);
  const float *dy = static_cast<float *>(params[2]);
  float *dg = static_cast<float *>(params[3]), *du = static_cast<float *>(params[4]);
  int nt = mfh::threads_for(n / 4096 + 1, 4096 * 30.0);
#pragma omp parallel for simd num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float s = 1.f / (1.f + std::exp(-g[i]));
    dg[i] = dy[i] * u[i] * s * (1.f + g[i] * (1.f - s));
    du[i] = dy[i] * g[i] * s;
  }
  return 0;
}
