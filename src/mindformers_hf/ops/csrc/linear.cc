// float32 linear layer: y [M, N] = x [M, K] @ w [N, K]^T, and its two gradients, dx = dy @ w and dw = dy^T @ x.
//
// Two shapes of work:
//   - few activation rows (decode, M <= kDotRows): every output is a dot product of an activation row with a weight
//     row, both contiguous in K. The weight is read once, straight from its [N, K] layout (no packing: packing
//     would read and write it again), 4 weight rows x 4 activation rows per register block, the K axis in vector
//     lanes and reduced at the end. The two threads split N: this is a stream of the weight at memory bandwidth.
//   - many rows (prefill, training): a GotoBLAS / BLIS-style GEMM. C = A @ B with A [Mg, Kg] and B [Kg, Ng] read
//     through transpose flags (the forward's B is w^T, dx's A is dy and B is w, dw's A is dy^T and B is x). Loops:
//     N in blocks of kNc; K in blocks of <= kKc (B's block packed into kNr-column panels, k-major); M in blocks of
//     kMc (A's block packed into kMr-row panels, k-major); then every kMr x kNr tile by the micro-kernel, which
//     holds the tile in registers for the whole K block. A B micro-panel (kKc x kNr floats) stays in L1 while the
//     A micro-panels stream from L2. The threads split M or N -- whichever duplicates less packing (each thread
//     packs the other operand itself): N when Ng >= Mg, else M.
// Micro-kernels: with AVX-512F (the library is built with -march=native) 14 x 32 tiles, 28 zmm accumulators, B
// loaded as two vectors per k and A broadcast from the packed panel; otherwise a portable 6 x 16 body in plain C++
// the compiler vectorises for the target (AVX2 / SSE / NEON / scalar). Both bodies are exported (`*_portable`) so
// the tests run the portable one on any machine.
// Sums run in another order than MindSpore's MatMul: results agree to float32 rounding (relative ~1e-6 * sqrt(K)).
#include "common.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#define MFH_HAVE_AVX512 1
#else
#define MFH_HAVE_AVX512 0
#endif

namespace {

constexpr int64_t kKc = 256;   // K block: a B micro-panel of kKc x 32 floats is 32 KB (L1 is 48 KB here)
constexpr int64_t kNc = 2048;  // N block (B block kKc x kNc: 2 MB, in L2/L3)
constexpr int64_t kDotRows = 8;
#ifndef MFH_LINEAR_MAX_THREADS
#define MFH_LINEAR_MAX_THREADS 64
#endif
inline int cap(int threads) { return std::min(threads, MFH_LINEAR_MAX_THREADS); }

// ---- micro-kernels: C[mr x nr] (+)= Ap panel (kc x MR, k-major) . Bp panel (kc x NR, k-major) ----

struct Portable {
  static constexpr int64_t MR = 6, NR = 16;
  static void tile(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc, int64_t mr, int64_t nr,
                   bool accumulate) {
    alignas(64) float acc[MR][NR] = {};
    for (int64_t k = 0; k < kc; ++k) {
      const float *b = bp + k * NR;
      for (int64_t i = 0; i < MR; ++i) {
        const float a = ap[k * MR + i];
#pragma omp simd
        for (int64_t j = 0; j < NR; ++j) acc[i][j] += a * b[j];
      }
    }
    for (int64_t i = 0; i < mr; ++i) {
      float *row = c + i * ldc;
      for (int64_t j = 0; j < nr; ++j) row[j] = accumulate ? row[j] + acc[i][j] : acc[i][j];
    }
  }
};

#if MFH_HAVE_AVX512
struct Avx512 {
  static constexpr int64_t MR = 14, NR = 32;
  static void tile(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc, int64_t mr, int64_t nr,
                   bool accumulate) {
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; ++k) {
      const __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
      _mm_prefetch(reinterpret_cast<const char *>(ap + 8 * MR), _MM_HINT_T0);
#pragma GCC unroll 14
      for (int i = 0; i < MR; ++i) {
        const __m512 a = _mm512_set1_ps(ap[i]);
        c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
        c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
      }
      ap += MR, bp += NR;
    }
    const __mmask16 m0 = nr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1);
    const __mmask16 m1 = nr >= 32 ? (__mmask16)0xffff : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      if (i >= mr) break;
      float *row = c + i * ldc;
      __m512 v0 = c0[i], v1 = c1[i];
      if (accumulate) {
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row + 16));
      }
      _mm512_mask_storeu_ps(row, m0, v0);
      _mm512_mask_storeu_ps(row + 16, m1, v1);
    }
  }
};
using Native = Avx512;
#else
using Native = Portable;
#endif

// A matrix read as element (i, k): A[i * ld + k], or A[k * ld + i] when `trans`
struct View {
  const float *p;
  int64_t ld;
  bool trans;
  float at(int64_t r, int64_t c) const { return trans ? p[c * ld + r] : p[r * ld + c]; }
};

// Ap = A[i0 : i0 + mc, k0 : k0 + kc] as MR-row panels, each k-major (MR floats per k), zero padded past mc
template <int64_t MR>
void pack_a(View a, int64_t i0, int64_t mc, int64_t k0, int64_t kc, float *ap) {
  for (int64_t ip = 0; ip < mc; ip += MR) {
    const int64_t rows = std::min(MR, mc - ip);
    float *dst = ap + ip * kc;
    if (a.trans) {  // A(i, k) = p[k * ld + i]: rows of MR contiguous floats
      for (int64_t k = 0; k < kc; ++k) {
        const float *src = a.p + (k0 + k) * a.ld + i0 + ip;
        for (int64_t i = 0; i < rows; ++i) dst[k * MR + i] = src[i];
        for (int64_t i = rows; i < MR; ++i) dst[k * MR + i] = 0.f;
      }
    } else {
      for (int64_t i = 0; i < MR; ++i) {
        if (i < rows) {
          const float *src = a.p + (i0 + ip + i) * a.ld + k0;
          for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = src[k];
        } else {
          for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = 0.f;
        }
      }
    }
  }
}

#if MFH_HAVE_AVX512
// dst[c * ldd + i] = src[i * lds + c] for a 16 x 16 block: unpack pairs of rows, then 4-float groups
// (shuffle_ps), then 128-bit lanes twice (shuffle_f32x4)
inline void transpose16(const float *src, int64_t lds, float *dst, int64_t ldd) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[g][c] = r[4g + c]: in 128-bit lane L, column c + 4L of rows 4g .. 4g + 3
  for (int g = 0; g < 4; ++g) {
    r[4 * g] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    r[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    r[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    r[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 v0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44), v1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xEE);
    const __m512 v2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44);
    const __m512 v3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xEE);
    _mm512_storeu_ps(dst + c * ldd, _mm512_shuffle_f32x4(v0, v2, 0x88));
    _mm512_storeu_ps(dst + (c + 4) * ldd, _mm512_shuffle_f32x4(v0, v2, 0xDD));
    _mm512_storeu_ps(dst + (c + 8) * ldd, _mm512_shuffle_f32x4(v1, v3, 0x88));
    _mm512_storeu_ps(dst + (c + 12) * ldd, _mm512_shuffle_f32x4(v1, v3, 0xDD));
  }
}
#endif

// Bp = B[k0 : k0 + kc, j0 : j0 + nc] as NR-column panels, each k-major (NR floats per k), zero padded past nc.
// B(k, j) = p[k * ld + j], or p[j * ld + k] when `trans` (the forward's w [N, K]).
template <int64_t NR>
void pack_b(View b, int64_t k0, int64_t kc, int64_t j0, int64_t nc, float *bp) {
  for (int64_t jp = 0; jp < nc; jp += NR) {
    const int64_t cols = std::min(NR, nc - jp);
    float *dst = bp + jp * kc;
    if (b.trans) {
#if MFH_HAVE_AVX512
      if (NR % 16 == 0 && cols == NR) {  // whole panels: 16 x 16 blocks through registers
        int64_t k = 0;
        for (; k + 16 <= kc; k += 16)
          for (int64_t j = 0; j < NR; j += 16) transpose16(b.p + (j0 + jp + j) * b.ld + k0 + k, b.ld, dst + k * NR + j, NR);
        for (; k < kc; ++k)
          for (int64_t j = 0; j < NR; ++j) dst[k * NR + j] = b.p[(j0 + jp + j) * b.ld + k0 + k];
        continue;
      }
#endif
      for (int64_t j = 0; j < NR; ++j) {
        if (j < cols) {
          const float *src = b.p + (j0 + jp + j) * b.ld + k0;
          for (int64_t k = 0; k < kc; ++k) dst[k * NR + j] = src[k];
        } else {
          for (int64_t k = 0; k < kc; ++k) dst[k * NR + j] = 0.f;
        }
      }
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        const float *src = b.p + (k0 + k) * b.ld + j0 + jp;
        std::memcpy(dst + k * NR, src, cols * sizeof(float));
        for (int64_t j = cols; j < NR; ++j) dst[k * NR + j] = 0.f;
      }
    }
  }
}

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// C[m0 : m1, n0 : n1] = A @ B (rows m0.. of C are rows m0.. of A), one thread, packing into its own buffers
template <class Kernel>
void gemm_block(View a, View b, float *c, int64_t ldc, int64_t K, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                std::vector<float> &abuf, std::vector<float> &bbuf) {
  constexpr int64_t MR = Kernel::MR, NR = Kernel::NR;
  constexpr int64_t kMc = MR * 12;
  const int64_t kblocks = (K + kKc - 1) / kKc;
  const int64_t kc_max = round_up((K + kblocks - 1) / kblocks, 8);  // K split evenly (576 -> 3 x 192)
  abuf.resize(kMc * kc_max);
  bbuf.resize(std::min(round_up(n1 - n0, NR), kNc) * kc_max);
  for (int64_t jc = n0; jc < n1; jc += kNc) {
    const int64_t nc = std::min(kNc, n1 - jc);
    for (int64_t pc = 0; pc < K; pc += kc_max) {
      const int64_t kc = std::min(kc_max, K - pc);
      pack_b<NR>(b, pc, kc, jc, nc, bbuf.data());
      for (int64_t ic = m0; ic < m1; ic += kMc) {
        const int64_t mc = std::min(kMc, m1 - ic);
        pack_a<MR>(a, ic, mc, pc, kc, abuf.data());
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const float *bp = bbuf.data() + jr * kc;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            Kernel::tile(kc, abuf.data() + ir * kc, bp, c + (ic + ir) * ldc + jc + jr, ldc, std::min(MR, mc - ir),
                         std::min(NR, nc - jr), pc > 0);
          }
        }
      }
    }
  }
}

// C [Mg, Ng] = A [Mg, K] @ B [K, Ng] on up to two threads
template <class Kernel>
void gemm(View a, View b, float *c, int64_t Mg, int64_t Ng, int64_t K) {
  if (K == 0) {
    std::fill(c, c + Mg * Ng, 0.f);
    return;
  }
  const int nt = cap(mfh::threads_for(2, Mg * Ng * K));  // 2 tasks of Mg * Ng * K flops each, about
  // each thread packs the operand it does not split: split the larger side
  const bool split_n = Ng >= Mg;
  const int64_t unit = split_n ? Kernel::NR : Kernel::MR, extent = split_n ? Ng : Mg;
  const int64_t step = round_up((extent + nt - 1) / nt, unit);
  const int64_t tasks = (extent + step - 1) / step;
  std::vector<std::vector<float>> bufs(2 * tasks);
  mfh::parallel_for(tasks, std::min<int64_t>(nt, tasks), [&](int64_t task, int) {
    const int64_t lo = task * step, hi = std::min(extent, lo + step);
    if (split_n)
      gemm_block<Kernel>(a, b, c, Ng, K, 0, Mg, lo, hi, bufs[2 * task], bufs[2 * task + 1]);
    else
      gemm_block<Kernel>(a, b, c, Ng, K, lo, hi, 0, Ng, bufs[2 * task], bufs[2 * task + 1]);
  });
}

// ---- few rows: y[m, n] = dot(x[m], w[n]) ----

constexpr int64_t kDotTask = 64;  // weight rows per thread task

void dot_rows_portable(const float *x, const float *w, float *y, int64_t M, int64_t K, int64_t N, int64_t n0,
                       int64_t n1) {
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) y[m * N + n] = mfh::dot(w + n * K, x + m * K, K);
}

#if MFH_HAVE_AVX512
// R weight rows x C activation rows per block (R * C accumulators): each weight vector is loaded once per block
template <int R, int C>
void dot_block_avx512(const float *const *xr, const float *w, float *y, int64_t K, int64_t N, int64_t n, int64_t rows) {
  const int64_t tail = K % 16;
  const __mmask16 tail_mask = tail ? (__mmask16)((1u << tail) - 1) : (__mmask16)0xffff;
  const float *wr[R];
  for (int r = 0; r < R; ++r) wr[r] = w + (n + std::min<int64_t>(r, rows - 1)) * K;
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 wv[R];
    for (int r = 0; r < R; ++r) {
      wv[r] = _mm512_loadu_ps(wr[r] + k);
      _mm_prefetch(reinterpret_cast<const char *>(wr[r] + k + 128), _MM_HINT_T0);
    }
    for (int c = 0; c < C; ++c) {
      const __m512 xv = _mm512_loadu_ps(xr[c] + k);
      for (int r = 0; r < R; ++r) acc[r][c] = _mm512_fmadd_ps(wv[r], xv, acc[r][c]);
    }
  }
  if (tail) {
    for (int c = 0; c < C; ++c) {
      const __m512 xv = _mm512_maskz_loadu_ps(tail_mask, xr[c] + k);
      for (int r = 0; r < R; ++r) acc[r][c] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail_mask, wr[r] + k), xv, acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    if (r >= rows) break;
    for (int c = 0; c < C; ++c) y[c * N + n + r] = _mm512_reduce_add_ps(acc[r][c]);
  }
}

template <int R, int C>
void dot_cols_avx512(const float *x, const float *w, float *y, int64_t m0, int64_t K, int64_t N, int64_t n0,
                     int64_t n1) {
  const float *xr[C];
  for (int c = 0; c < C; ++c) xr[c] = x + (m0 + c) * K;
  for (int64_t n = n0; n < n1; n += R) dot_block_avx512<R, C>(xr, w, y + m0 * N, K, N, n, std::min<int64_t>(R, n1 - n));
}

void dot_rows_avx512(const float *x, const float *w, float *y, int64_t M, int64_t K, int64_t N, int64_t n0,
                     int64_t n1) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) dot_cols_avx512<4, 4>(x, w, y, m, K, N, n0, n1);
  switch (M - m) {
    case 3: dot_cols_avx512<4, 3>(x, w, y, m, K, N, n0, n1); break;
    case 2: dot_cols_avx512<6, 2>(x, w, y, m, K, N, n0, n1); break;
    case 1: dot_cols_avx512<8, 1>(x, w, y, m, K, N, n0, n1); break;
    default: break;
  }
}
#endif

// The threads take one contiguous share of the weight rows each, the same share every call: a weight that fits in
// the cores' L2 caches together (q/k/v/o here) stays split between them from one call to the next.
template <class Rows>
void dot_linear(const float *x, const float *w, float *y, int64_t M, int64_t K, int64_t N, Rows rows) {
  const int64_t blocks = (N + kDotTask - 1) / kDotTask;
  const int nt = cap(mfh::threads_for(blocks, 2.0 * M * K * kDotTask + 4.0 * K * kDotTask));
  const int64_t share = (blocks + nt - 1) / nt * kDotTask;
  mfh::parallel_for(nt, nt, [&](int64_t t, int) {
    if (t * share < N) rows(x, w, y, M, K, N, t * share, std::min(N, (t + 1) * share));
  });
}

bool shapes2(int nparam, int *ndims, const char **dtypes) {
  return nparam == 3 && ndims[0] == 2 && ndims[1] == 2 && ndims[2] == 2 && mfh::all_float32(3, dtypes);
}

template <class Kernel, class Rows>
int forward(MFH_ARGS, Rows rows) {
  if (!shapes2(nparam, ndims, dtypes)) return 1;
  const int64_t M = shapes[0][0], K = shapes[0][1], N = shapes[1][0];
  if (shapes[1][1] != K || shapes[2][0] != M || shapes[2][1] != N) return 1;
  const float *x = static_cast<float *>(params[0]);
  const float *w = static_cast<float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  if (M <= kDotRows)
    dot_linear(x, w, y, M, K, N, rows);
  else
    gemm<Kernel>(View{x, K, false}, View{w, K, true}, y, M, N, K);
  return 0;
}

// dy [M, N], w [N, K] -> dx [M, K] = dy @ w
template <class Kernel>
int backward_x(MFH_ARGS) {
  if (!shapes2(nparam, ndims, dtypes)) return 1;
  const int64_t M = shapes[0][0], N = shapes[0][1], K = shapes[1][1];
  if (shapes[1][0] != N || shapes[2][0] != M || shapes[2][1] != K) return 1;
  gemm<Kernel>(View{static_cast<float *>(params[0]), N, false}, View{static_cast<float *>(params[1]), K, false},
               static_cast<float *>(params[2]), M, K, N);
  return 0;
}

// dy [M, N], x [M, K] -> dw [N, K] = dy^T @ x
template <class Kernel>
int backward_w(MFH_ARGS) {
  if (!shapes2(nparam, ndims, dtypes)) return 1;
  const int64_t M = shapes[0][0], N = shapes[0][1], K = shapes[1][1];
  if (shapes[1][0] != M || shapes[2][0] != N || shapes[2][1] != K) return 1;
  gemm<Kernel>(View{static_cast<float *>(params[0]), N, true}, View{static_cast<float *>(params[1]), K, false},
               static_cast<float *>(params[2]), N, K, M);
  return 0;
}

}  // namespace

// inputs: x [M, K], w [N, K] float32; output: y [M, N] = x @ w^T
MFH_KERNEL linear_fwd(MFH_ARGS) {
#if MFH_HAVE_AVX512
  return forward<Native>(nparam, params, ndims, shapes, dtypes, stream, extra, dot_rows_avx512);
#else
  return forward<Native>(nparam, params, ndims, shapes, dtypes, stream, extra, dot_rows_portable);
#endif
}

MFH_KERNEL linear_fwd_portable(MFH_ARGS) {
  return forward<Portable>(nparam, params, ndims, shapes, dtypes, stream, extra, dot_rows_portable);
}

// inputs: dy [M, N], w [N, K]; output: dx [M, K]
MFH_KERNEL linear_dx(MFH_ARGS) { return backward_x<Native>(nparam, params, ndims, shapes, dtypes, stream, extra); }
MFH_KERNEL linear_dx_portable(MFH_ARGS) {
  return backward_x<Portable>(nparam, params, ndims, shapes, dtypes, stream, extra);
}

// inputs: dy [M, N], x [M, K]; output: dw [N, K]
MFH_KERNEL linear_dw(MFH_ARGS) { return backward_w<Native>(nparam, params, ndims, shapes, dtypes, stream, extra); }
MFH_KERNEL linear_dw_portable(MFH_ARGS) {
  return backward_w<Portable>(nparam, params, ndims, shapes, dtypes, stream, extra);
}

// 1 when linear_fwd / linear_dx / linear_dw run the AVX-512 micro-kernels (read through ctypes by ops/linear.py)
extern "C" int linear_uses_avx512() { return MFH_HAVE_AVX512; }
