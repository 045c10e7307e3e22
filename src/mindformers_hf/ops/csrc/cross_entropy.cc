// Cross-entropy per row of logits [N, V] against integer labels [N], forward and backward, in one pass each.
//
//   loss[n] = logsumexp(x[n, :]) - x[n, label[n]],   0 where label[n] == ignore_index
//   dx[n, v] = dloss[n] * (exp(x[n, v] - lse[n]) - (v == label[n])),   0 on ignored rows
//
// The forward also returns lse [N] (the row's log-sum-exp) so the backward rebuilds the softmax without a
// second max/sum pass. One row (V floats: 192 KB for a 49k vocabulary) stays in L2 between the passes, and
// no [N, V] temporary is ever written -- the MindSpore composition (log_softmax, gather, its backward) writes
// several, which made the loss of a 4 x 256-token step take longer than the LM head's matmul.
//
// A label outside [0, V) that is not ignore_index makes the kernel fail (return 2), as torch raises.
#include "common.h"

namespace {

inline bool is_int32(const char *dtype) { return std::strcmp(dtype, "int32") == 0; }

inline float row_max(const float *x, int64_t v) {
  float m = -3.0e38f;  // finite: built with -ffast-math
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < v; ++j) m = std::max(m, x[j]);
  return m;
}

inline float row_sum_exp(const float *x, int64_t v, float m) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < v; ++j) s += std::exp(x[j] - m);
  return s;
}

constexpr double kRowCost = 12.0;  // flops-equivalent per element (one exp dominates)

}  // namespace

// inputs: logits [N, V] float32, labels [N] int32, ignore_index [1] int32; outputs: loss [N], lse [N] float32
MFH_KERNEL cross_entropy_fwd(MFH_ARGS) {
  if (nparam != 5 || !mfh::all_float32(1, dtypes) || !is_int32(dtypes[1]) || !is_int32(dtypes[2]) ||
      !mfh::all_float32(2, dtypes + 3) || ndims[0] != 2)
    return 1;
  const int64_t n = shapes[0][0], v = shapes[0][1];
  const float *x = static_cast<float *>(params[0]);
  const int32_t *labels = static_cast<int32_t *>(params[1]);
  const int32_t ignore = *static_cast<int32_t *>(params[2]);
  float *loss = static_cast<float *>(params[3]), *lse = static_cast<float *>(params[4]);
  std::atomic<bool> bad_label{false};
  mfh::parallel_for(n, mfh::threads_for(n, v * kRowCost), [&](int64_t row, int) {
    const float *xr = x + row * v;
    const float m = row_max(xr, v);
    lse[row] = m + std::log(row_sum_exp(xr, v, m));
    const int32_t label = labels[row];
    if (label == ignore) {
      loss[row] = 0.f;
    } else if (label < 0 || label >= v) {
      bad_label = true;
      loss[row] = 0.f;
    } else {
      loss[row] = lse[row] - xr[label];
    }
  });
  return bad_label ? 2 : 0;
}

// inputs: logits [N, V], labels [N], ignore_index [1], lse [N], dloss [N]; output: dlogits [N, V]
MFH_KERNEL cross_entropy_bwd(MFH_ARGS) {
  if (nparam != 6 || !mfh::all_float32(1, dtypes) || !is_int32(dtypes[1]) || !is_int32(dtypes[2]) ||
      !mfh::all_float32(3, dtypes + 3) || ndims[0] != 2)
    return 1;
  const int64_t n = shapes[0][0], v = shapes[0][1];
  const float *x = static_cast<float *>(params[0]);
  const int32_t *labels = static_cast<int32_t *>(params[1]);
  const int32_t ignore = *static_cast<int32_t *>(params[2]);
  const float *lse = static_cast<float *>(params[3]), *dloss = static_cast<float *>(params[4]);
  float *dx = static_cast<float *>(params[5]);
  mfh::parallel_for(n, mfh::threads_for(n, v * kRowCost), [&](int64_t row, int) {
    const float *xr = x + row * v;
    float *dr = dx + row * v;
    const int32_t label = labels[row];
    if (label == ignore || label < 0 || label >= v) {
      std::memset(dr, 0, sizeof(float) * v);
      return;
    }
    const float g = dloss[row], l = lse[row];
#pragma omp simd
    for (int64_t j = 0; j < v; ++j) dr[j] = g * std::exp(xr[j] - l);
    dr[label] -= g;
  });
  return 0;
}
