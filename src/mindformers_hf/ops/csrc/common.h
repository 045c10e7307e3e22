// Shared helpers for the CPU kernels loaded by MindSpore's `ops.Custom(func_type="aot")`.
//
// Every kernel has MindSpore's AOT signature:
//   int f(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream, void* extra)
// params holds the inputs then the outputs. Kernels accept float32 only (the Python side casts bf16/fp16 in
// and out, as the CPU model computes in float32 anyway) and return 1 on a wrong dtype, which MindSpore turns
// into an exception.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#include <omp.h>

#define MFH_KERNEL extern "C" int
#define MFH_ARGS int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, void *extra

namespace mfh {

inline bool all_float32(int n, const char **dtypes) {
  for (int i = 0; i < n; ++i) {
    if (std::strcmp(dtypes[i], "float32") != 0 && std::strcmp(dtypes[i], "float") != 0) return false;
  }
  return true;
}

inline int64_t numel(int nd, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < nd; ++i) n *= shape[i];
  return n;
}

inline float dot(const float *a, const float *b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void axpy(float alpha, const float *x, float *y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// Threads for `work` independent items of roughly `cost` flops each: small calls stay single-threaded,
// because waking the OpenMP team costs more than the work.
inline int threads_for(int64_t work, double cost) {
  int max_threads = omp_get_max_threads();
  if (work < 2 || work * cost < 2e5) return 1;
  return work < max_threads ? (int)work : max_threads;
}

}  // namespace mfh
