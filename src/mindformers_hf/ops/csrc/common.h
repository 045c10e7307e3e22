// Shared helpers for the CPU kernels loaded by MindSpore's `ops.Custom(func_type="aot")`.
//
// Every kernel has MindSpore's AOT signature:
//   int f(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream, void* extra)
// params holds the inputs then the outputs. Kernels accept float32 activations (the Python side casts bf16/fp16
// in and out, as the CPU model computes in float32) -- bf16_linear.cc also reads bfloat16 weights -- and return 1
// on a wrong dtype, which MindSpore turns into an exception. `#pragma omp simd` marks loops to vectorise (built with -fopenmp-simd: no OpenMP
// runtime, no threads).
#pragma once
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

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

inline int hardware_threads() {
  static const int n = std::max(1u, std::thread::hardware_concurrency());
  return n;
}

// Threads for `work` independent tasks of about `cost` flops each: one below ~4 Mflop in all, where
// starting a thread (tens of microseconds) costs more than it saves.
inline int threads_for(int64_t work, double cost) {
  if (work < 2 || work * cost < 4e6) return 1;
  return (int)std::min<int64_t>(work, hardware_threads());
}

// body(task, thread) for every task in [0, n), handed out one at a time to `threads` threads (the caller
// is thread 0). Threads are started per call and joined before returning. Not OpenMP on purpose: an
// OpenMP team spin-waits after each parallel region by default (OMP_WAIT_POLICY), stealing the cores from
// the MindSpore ops that run next -- that made a whole model slower than with no kernels at all.
template <class Body>
void parallel_for(int64_t n, int threads, Body body) {
  if (threads <= 1 || n <= 1) {
    for (int64_t task = 0; task < n; ++task) body(task, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  auto worker = [&](int thread) {
    for (int64_t task = next.fetch_add(1); task < n; task = next.fetch_add(1)) body(task, thread);
  };
  std::vector<std::thread> pool;
  for (int thread = 1; thread < threads; ++thread) pool.emplace_back(worker, thread);
  worker(0);
  for (auto &t : pool) t.join();
}

}  // namespace mfh
