// Rotary position embedding applied to q and k in one call, forward and backward.
// q [B, H, S, D], k [B, KV, S, D], cos/sin [B or 1, S, R] in HF's layout (cat(freqs, freqs)), R <= D:
// the first R channels rotate, the rest pass through (partial rotary).
//   half layout (HF rotate_half): channel i pairs with i + R/2
//   interleaved layout (GPT-J):   channel 2i pairs with 2i + 1, both using frequency i
// The rotation is orthogonal, so the backward pass is the same rotation with sin negated.
// The *_bshd_fwd kernels read q [B, S, H, D] and k [B, S, KV, D] (the projections before the head swap) and
// write the usual [B, H, S, D]: MindSpore would otherwise copy the swapped view element by element before the
// call, which took several times longer than the rotation itself.
#include "common.h"

namespace {

template <bool Interleaved, bool Backward, bool InBSHD>
void rotate(const float *x, const float *cos, const float *sin, float *out, int64_t batch, int64_t heads, int64_t seq,
            int64_t dim, int64_t rot, int64_t cos_batch) {
  const int64_t half = rot / 2;
  const float sign = Backward ? -1.f : 1.f;
  mfh::parallel_for(batch * heads, mfh::threads_for(batch * heads, 4.0 * seq * dim), [&](int64_t bh, int) {
    const int64_t b = bh / heads;
    const float *cb = cos + (cos_batch == 1 ? 0 : b) * seq * rot;
    const float *sb = sin + (cos_batch == 1 ? 0 : b) * seq * rot;
    for (int64_t t = 0; t < seq; ++t) {
      const float *xr = x + (InBSHD ? ((b * seq + t) * heads + bh % heads) : (bh * seq + t)) * dim;
      float *orow = out + (bh * seq + t) * dim;
      const float *c = cb + t * rot, *s = sb + t * rot;
      if (Interleaved) {
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          float a = xr[2 * i], bb = xr[2 * i + 1];
          orow[2 * i] = a * c[i] - sign * bb * s[i];
          orow[2 * i + 1] = bb * c[i] + sign * a * s[i];
        }
      } else if (!Backward) {
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          float a = xr[i], bb = xr[i + half];
          orow[i] = a * c[i] - bb * s[i];
          orow[i + half] = bb * c[i + half] + a * s[i + half];
        }
      } else {  // transpose of the forward map, exact even if the two halves of cos/sin differed
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          float a = xr[i], bb = xr[i + half];
          orow[i] = a * c[i] + bb * s[i + half];
          orow[i + half] = bb * c[i + half] - a * s[i];
        }
      }
      if (rot < dim) std::memcpy(orow + rot, xr + rot, sizeof(float) * (dim - rot));
    }
  });
}

template <bool Interleaved, bool Backward, bool InBSHD = false>
int rope(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 6 || !mfh::all_float32(6, dtypes) || ndims[0] != 4 || ndims[1] != 4 || ndims[2] != 3) return 1;
  const float *cos = static_cast<float *>(params[2]), *sin = static_cast<float *>(params[3]);
  int64_t cos_batch = shapes[2][0], rot = shapes[2][2];
  for (int which = 0; which < 2; ++which) {
    const int64_t *s = shapes[which];
    // [B, S, heads, D] in: the sizes are read as [B, heads, S, D]
    const int64_t heads = InBSHD ? s[2] : s[1], seq = InBSHD ? s[1] : s[2];
    rotate<Interleaved, Backward, InBSHD>(static_cast<float *>(params[which]), cos, sin,
                                          static_cast<float *>(params[4 + which]), s[0], heads, seq, s[3], rot, cos_batch);
  }
  return 0;
}

}  // namespace

// inputs: q, k, cos, sin; outputs: q_rot, k_rot (the backward kernels take dq_rot, dk_rot and return dq, dk)
MFH_KERNEL rope_half_fwd(MFH_ARGS) { return rope<false, false>(nparam, params, ndims, shapes, dtypes); }
MFH_KERNEL rope_half_bwd(MFH_ARGS) { return rope<false, true>(nparam, params, ndims, shapes, dtypes); }
MFH_KERNEL rope_interleaved_fwd(MFH_ARGS) { return rope<true, false>(nparam, params, ndims, shapes, dtypes); }
MFH_KERNEL rope_interleaved_bwd(MFH_ARGS) { return rope<true, true>(nparam, params, ndims, shapes, dtypes); }
MFH_KERNEL rope_half_bshd_fwd(MFH_ARGS) { return rope<false, false, true>(nparam, params, ndims, shapes, dtypes); }
MFH_KERNEL rope_interleaved_bshd_fwd(MFH_ARGS) {
  return rope<true, false, true>(nparam, params, ndims, shapes, dtypes);
}
