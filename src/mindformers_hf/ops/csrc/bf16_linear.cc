// y [M, N] float32 = x [M, K] float32 @ w [N, K]^T bfloat16: a linear layer whose weights are held as bf16 (half the
// bytes to stream per token in decode) while activations stay float32.
//
// Two bodies, both exported:
//   - bf16_linear_fwd: with AVX-512 BF16 (`vdpbf16ps`, detected when the library is built with -march=native) each
//     activation row is split once into two bf16 halves, x = hi + lo (hi = x rounded to bf16, lo = the rest rounded
//     to bf16), and the dot products run as dpbf16(w, hi) + dpbf16(w, lo): the weights are exact, the activations
//     keep ~16 of float32's 24 mantissa bits (relative error ~2^-17, far below the weights' own bf16 rounding), and
//     every product accumulates in float32. Without AVX-512 BF16 but with AVX2 + FMA: 8 weights at a time widened
//     in a register (zero-extend, shift) and multiplied into float32 accumulators, 4 weight rows x 2 activation
//     rows per block (exact float32 products, like the portable body, summed in another order). Else the
//     portable body.
//   - bf16_linear_fwd_portable: each block of weight rows is widened to float32 by a 16-bit shift (bf16 is the top
//     half of a float32) into a small buffer, then float32 FMAs the compiler vectorises for the target (AVX2,
//     AVX-512 or scalar): exact float32 products of the bf16 weights.
// Inference kernels: the gradient is a composite in ops/bf16.py.
#include "common.h"

#if defined(__AVX512BF16__) && defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define MFH_HAVE_AVX512BF16 1
#else
#define MFH_HAVE_AVX512BF16 0
#endif
#if !MFH_HAVE_AVX512BF16 && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MFH_HAVE_AVX2 1
#else
#define MFH_HAVE_AVX2 0
#endif

namespace {

bool check(int nparam, int *ndims, int64_t **shapes, const char **dtypes, int64_t &M, int64_t &K, int64_t &N) {
  if (nparam != 3 || ndims[0] != 2 || ndims[1] != 2 || ndims[2] != 2) return false;
  if (!mfh::all_float32(1, dtypes) || !mfh::all_float32(1, dtypes + 2)) return false;
  if (std::strcmp(dtypes[1], "bfloat16") != 0 && std::strcmp(dtypes[1], "uint16") != 0) return false;
  M = shapes[0][0], K = shapes[0][1], N = shapes[1][0];
  return shapes[1][1] == K && shapes[2][0] == M && shapes[2][1] == N;
}

constexpr int64_t kRows = 4;      // weight rows per inner block (their partial sums stay in registers)
constexpr int64_t kRowTask = 64;  // weight rows per thread task

inline float widen(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// rows [n0, n1) of y for every activation row, through float32 FMAs on widened weights
void portable_rows(const float *x, const uint16_t *w, float *y, int64_t M, int64_t K, int64_t N, int64_t n0,
                   int64_t n1) {
  constexpr int64_t kChunk = 256;
  alignas(64) float buf[kRows][kChunk];
  std::vector<float> acc(kRows * M);
  for (int64_t n = n0; n < n1; n += kRows) {
    const int64_t rows = std::min(kRows, n1 - n);
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
      const int64_t len = std::min(kChunk, K - k0);
      for (int64_t r = 0; r < rows; ++r) {
        const uint16_t *src = w + (n + r) * K + k0;
        float *dst = buf[r];
#pragma omp simd
        for (int64_t k = 0; k < len; ++k) dst[k] = widen(src[k]);
      }
      for (int64_t m = 0; m < M; ++m) {
        const float *xr = x + m * K + k0;
        for (int64_t r = 0; r < rows; ++r) acc[r * M + m] += mfh::dot(buf[r], xr, len);
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t m = 0; m < M; ++m) y[m * N + n + r] = acc[r * M + m];
    }
  }
}

#if MFH_HAVE_AVX2
// 8 bf16 weights -> 8 float32 in a register (bf16 is the top half of a float32)
inline __m256 widen8(const uint16_t *p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))), 16));
}

inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// R weight rows x C activation rows, widened in registers (no buffer pass): the K tail (K % 8) in scalar code
template <int R, int C>
void avx2_block(const float *x, const uint16_t *w, float *y, int64_t K, int64_t N, int64_t n, int64_t rows, int64_t m0) {
  const uint16_t *wr[R];
  const float *xr[C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) wr[r] = w + (n + std::min<int64_t>(r, rows - 1)) * K;
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c) xr[c] = x + (m0 + c) * K;
  __m256 acc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) wv[r] = widen8(wr[r] + k);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const __m256 xv = _mm256_loadu_ps(xr[c] + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][c] = _mm256_fmadd_ps(wv[r], xv, acc[r][c]);
    }
  }
  for (int r = 0; r < R && r < rows; ++r) {
    for (int c = 0; c < C; ++c) {
      float sum = hsum256(acc[r][c]);
      for (int64_t t = k; t < K; ++t) sum += widen(wr[r][t]) * xr[c][t];
      y[(m0 + c) * N + n + r] = sum;
    }
  }
}

template <int R, int C>
void avx2_cols(const float *x, const uint16_t *w, float *y, int64_t K, int64_t N, int64_t n0, int64_t n1, int64_t m0) {
  for (int64_t n = n0; n < n1; n += R) avx2_block<R, C>(x, w, y, K, N, n, std::min<int64_t>(R, n1 - n), m0);
}

void avx2_rows(const float *x, const uint16_t *w, float *y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  int64_t m = 0;
  for (; m + 2 <= M; m += 2) avx2_cols<4, 2>(x, w, y, K, N, n0, n1, m);
  if (m < M) avx2_cols<4, 1>(x, w, y, K, N, n0, n1, m);
}
#endif

template <class Rows>
int run(int64_t M, int64_t K, int64_t N, Rows rows) {
  const int64_t tasks = (N + kRowTask - 1) / kRowTask;
  const int nt = mfh::threads_for(tasks, 2.0 * M * K * kRowTask);
  mfh::parallel_for(tasks, nt, [&](int64_t task, int) { rows(task * kRowTask, std::min(N, (task + 1) * kRowTask)); });
  return 0;
}

#if MFH_HAVE_AVX512BF16
constexpr int64_t kCols = 4;  // activation rows per inner block

// x [M, K] -> hi, lo [M, Kp] bf16 (Kp = K rounded up to 32, zero padded): x ~= hi + lo
void split_activations(const float *x, int64_t M, int64_t K, int64_t Kp, uint16_t *hi, uint16_t *lo) {
  std::vector<float> row(Kp);
  for (int64_t m = 0; m < M; ++m) {
    std::fill(row.begin(), row.end(), 0.f);
    std::memcpy(row.data(), x + m * K, K * sizeof(float));
    for (int64_t k = 0; k < Kp; k += 32) {
      __m512 a = _mm512_loadu_ps(row.data() + k), b = _mm512_loadu_ps(row.data() + k + 16);
      __m512bh h = _mm512_cvtne2ps_pbh(b, a);  // lanes 0-15 from a, 16-31 from b
      __m512i hbits = (__m512i)h;
      // the bf16 halves back to float32 (a shift), then what they missed
      __m512 ha = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(hbits)), 16));
      __m512 hb = _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(hbits, 1)), 16));
      __m512bh l = _mm512_cvtne2ps_pbh(_mm512_sub_ps(b, hb), _mm512_sub_ps(a, ha));
      _mm512_storeu_si512(hi + m * Kp + k, hbits);
      _mm512_storeu_si512(lo + m * Kp + k, (__m512i)l);
    }
  }
}

void avx512_rows(const uint16_t *hi, const uint16_t *lo, const uint16_t *w, float *y, int64_t M, int64_t K,
                 int64_t Kp, int64_t N, int64_t n0, int64_t n1) {
  const int64_t tail = K % 32;
  const __mmask32 tail_mask = tail ? (__mmask32)((1u << tail) - 1) : (__mmask32)0xffffffffu;
  for (int64_t n = n0; n < n1; n += kRows) {
    const int64_t rows = std::min(kRows, n1 - n);
    for (int64_t m0 = 0; m0 < M; m0 += kCols) {
      const int64_t cols = std::min(kCols, M - m0);
      __m512 acc[kRows][kCols];
      for (int64_t r = 0; r < kRows; ++r)
        for (int64_t c = 0; c < kCols; ++c) acc[r][c] = _mm512_setzero_ps();
      for (int64_t k = 0; k < Kp; k += 32) {
        const __mmask32 mask = (k + 32 <= K) ? (__mmask32)0xffffffffu : tail_mask;
        __m512bh wv[kRows];
        for (int64_t r = 0; r < kRows; ++r)
          wv[r] = (__m512bh)_mm512_maskz_loadu_epi16(r < rows ? mask : 0, w + (n + (r < rows ? r : 0)) * K + k);
        for (int64_t c = 0; c < kCols; ++c) {
          if (c >= cols) break;
          const __m512bh xh = (__m512bh)_mm512_loadu_si512(hi + (m0 + c) * Kp + k);
          const __m512bh xl = (__m512bh)_mm512_loadu_si512(lo + (m0 + c) * Kp + k);
          for (int64_t r = 0; r < kRows; ++r) {
            acc[r][c] = _mm512_dpbf16_ps(acc[r][c], wv[r], xh);
            acc[r][c] = _mm512_dpbf16_ps(acc[r][c], wv[r], xl);
          }
        }
      }
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) y[(m0 + c) * N + n + r] = _mm512_reduce_add_ps(acc[r][c]);
    }
  }
}
#endif

}  // namespace

// inputs: x [M, K] float32, w [N, K] bfloat16; output: y [M, N] float32
MFH_KERNEL bf16_linear_fwd_portable(MFH_ARGS) {
  int64_t M, K, N;
  if (!check(nparam, ndims, shapes, dtypes, M, K, N)) return 1;
  const float *x = static_cast<float *>(params[0]);
  const uint16_t *w = static_cast<uint16_t *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  return run(M, K, N, [&](int64_t n0, int64_t n1) { portable_rows(x, w, y, M, K, N, n0, n1); });
}

MFH_KERNEL bf16_linear_fwd(MFH_ARGS) {
#if MFH_HAVE_AVX512BF16 || MFH_HAVE_AVX2
  int64_t M, K, N;
  if (!check(nparam, ndims, shapes, dtypes, M, K, N)) return 1;
  const float *x = static_cast<float *>(params[0]);
  const uint16_t *w = static_cast<uint16_t *>(params[1]);
  float *y = static_cast<float *>(params[2]);
#endif
#if MFH_HAVE_AVX512BF16
  const int64_t Kp = (K + 31) / 32 * 32;
  std::vector<uint16_t> hi(M * Kp), lo(M * Kp);
  split_activations(x, M, K, Kp, hi.data(), lo.data());
  return run(M, K, N, [&](int64_t n0, int64_t n1) { avx512_rows(hi.data(), lo.data(), w, y, M, K, Kp, N, n0, n1); });
#elif MFH_HAVE_AVX2
  return run(M, K, N, [&](int64_t n0, int64_t n1) { avx2_rows(x, w, y, M, K, N, n0, n1); });
#else
  return bf16_linear_fwd_portable(nparam, params, ndims, shapes, dtypes, stream, extra);
#endif
}

// inputs: w bfloat16 (any shape); output: the same values as float32 (many activation rows take float32's GEMM on
// this; MindSpore's own bf16 -> float32 cast on CPU is an order of magnitude slower)
MFH_KERNEL bf16_widen(MFH_ARGS) {
  if (nparam != 2 || std::strcmp(dtypes[0], "bfloat16") != 0 || !mfh::all_float32(1, dtypes + 1)) return 1;
  const int64_t n = mfh::numel(ndims[0], shapes[0]);
  if (mfh::numel(ndims[1], shapes[1]) != n) return 1;
  const uint16_t *w = static_cast<uint16_t *>(params[0]);
  uint32_t *out = static_cast<uint32_t *>(params[1]);
  constexpr int64_t kChunk = 1 << 16;
  const int64_t tasks = (n + kChunk - 1) / kChunk;
  mfh::parallel_for(tasks, mfh::threads_for(tasks, 4.0 * kChunk), [&](int64_t task, int) {
    const int64_t end = std::min(n, (task + 1) * kChunk);
#pragma omp simd
    for (int64_t i = task * kChunk; i < end; ++i) out[i] = static_cast<uint32_t>(w[i]) << 16;
  });
  return 0;
}

// inputs: w [V, H] bfloat16, ids [N] int32 or int64 (each in [0, V): layers.Embedding checks); output: [N, H]
// float32, row i = w[ids[i]] widened (MindSpore's CPU Gather has no bfloat16)
MFH_KERNEL bf16_embedding(MFH_ARGS) {
  if (nparam != 3 || ndims[0] != 2 || ndims[1] != 1 || ndims[2] != 2) return 1;
  if (std::strcmp(dtypes[0], "bfloat16") != 0 || !mfh::all_float32(1, dtypes + 2)) return 1;
  const bool i64 = std::strcmp(dtypes[1], "int64") == 0;
  if (!i64 && std::strcmp(dtypes[1], "int32") != 0) return 1;
  const int64_t V = shapes[0][0], H = shapes[0][1], N = shapes[1][0];
  if (shapes[2][0] != N || shapes[2][1] != H) return 1;
  const uint16_t *w = static_cast<uint16_t *>(params[0]);
  uint32_t *out = static_cast<uint32_t *>(params[2]);
  for (int64_t i = 0; i < N; ++i) {
    const int64_t id = i64 ? static_cast<int64_t *>(params[1])[i] : static_cast<int32_t *>(params[1])[i];
    if (id < 0 || id >= V) return 1;
    const uint16_t *src = w + id * H;
    uint32_t *dst = out + i * H;
#pragma omp simd
    for (int64_t h = 0; h < H; ++h) dst[h] = static_cast<uint32_t>(src[h]) << 16;
  }
  return 0;
}

// 1 when bf16_linear_fwd runs on AVX-512 BF16 (read through ctypes by ops/bf16.py for benchmarks and tests)
extern "C" int bf16_linear_uses_avx512bf16() { return MFH_HAVE_AVX512BF16; }
