#include "fused_kernels.h"

#include <cmath>

// One clone per instruction set on x86-64 (resolved once, at load time); plain code elsewhere.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DDPM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DDPM_CLONES
#endif

namespace ddpm::kernels {
namespace {

// MurmurHash3's 32-bit finaliser: every input bit affects every output bit.
inline uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

inline float silu(float z) { return z / (1.0f + std::exp(-z)); }

inline float silu_grad(float z) {
  const float s = 1.0f / (1.0f + std::exp(-z));
  return s * (1.0f + z * (1.0f - s));
}

// bfloat16 values are the top half of a float's bits. Loads widen exactly; stores round to nearest even (NaN stays
// a NaN). Overloads on the element type let one template body serve float and bfloat16 arrays.
inline float load(float v) { return v; }
inline float load(uint16_t v) { return __builtin_bit_cast(float, static_cast<uint32_t>(v) << 16); }
inline void store(float& out, float v) { out = v; }
inline void store(uint16_t& out, float v) {
  const uint32_t u = __builtin_bit_cast(uint32_t, v);
  // (A bit test, not v != v: this unit is compiled with -ffast-math.)
  out = (u & 0x7fffffffu) > 0x7f800000u ? static_cast<uint16_t>((u >> 16) | 0x40u)
                                        : static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

template <class In>
inline void row_sums_t(const In* x, int64_t rows, int64_t C, const float* dev, double* acc) {
  for (int64_t r = 0; r < rows; ++r) {
    const In* xr = x + r * C;
    if (dev == nullptr) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) acc[c] += load(xr[c]);
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float d = load(xr[c]) - dev[c];
        acc[c] += d * d;
      }
    }
  }
}

template <class In, class Out>
inline void affine_rows_t(const In* x, Out* y, int64_t rows, int64_t C, const float* a, const float* b, bool use_silu) {
  for (int64_t r = 0; r < rows; ++r) {
    const In* xr = x + r * C;
    Out* yr = y + r * C;
    if (use_silu) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) store(yr[c], silu(load(xr[c]) * a[c] + b[c]));
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) store(yr[c], load(xr[c]) * a[c] + b[c]);
    }
  }
}

template <class In>
inline void grad_rows_t(const In* x, const In* dout, float* g_out, int64_t rows, int64_t C, const float* a,
                        const float* b, const float* mean, bool use_silu, double* sg, double* sgx) {
  for (int64_t r = 0; r < rows; ++r) {
    const In* xr = x + r * C;
    const In* dr = dout + r * C;
    float* gr = g_out + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float xv = load(xr[c]);
      const float g = use_silu ? load(dr[c]) * silu_grad(xv * a[c] + b[c]) : load(dr[c]);
      gr[c] = g;
      sg[c] += g;
      sgx[c] += g * (xv - mean[c]);
    }
  }
}

template <class In>
inline void combine_rows_t(const float* g, const In* x, In* dx, int64_t rows, int64_t C, const float* k1,
                           const float* k2, const float* k3) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* gr = g + r * C;
    const In* xr = x + r * C;
    In* dr = dx + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) store(dr[c], k1[c] * gr[c] + k2[c] * load(xr[c]) + k3[c]);
  }
}

template <class T>
inline void dropout_t(const T* x, T* y, int64_t begin, int64_t n, uint64_t seed, uint64_t keep_threshold, float scale) {
  const uint32_t s1 = static_cast<uint32_t>(seed), s2 = static_cast<uint32_t>(seed >> 32);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t k = static_cast<uint64_t>(begin + i);
    const uint32_t h = fmix32(fmix32(static_cast<uint32_t>(k) * 0x9e3779b1u ^ s1) ^ s2 ^ static_cast<uint32_t>(k >> 32));
    store(y[i], static_cast<uint64_t>(h) < keep_threshold ? load(x[i]) * scale : 0.0f);
  }
}

}  // namespace

DDPM_CLONES double sum(const float* x, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += x[i];
  return s;
}

DDPM_CLONES double sum_sq_dev(const float* x, int64_t n, float mean) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) {
    const float d = x[i] - mean;
    s += d * d;
  }
  return s;
}

DDPM_CLONES void row_sums(const float* x, int64_t rows, int64_t C, const float* dev, double* acc) {
  row_sums_t(x, rows, C, dev, acc);
}
DDPM_CLONES void row_sums(const uint16_t* x, int64_t rows, int64_t C, const float* dev, double* acc) {
  row_sums_t(x, rows, C, dev, acc);
}

DDPM_CLONES void affine_channel(const float* x, float* y, int64_t n, float a, float b, bool use_silu) {
  if (use_silu) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = silu(x[i] * a + b);
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * a + b;
  }
}

DDPM_CLONES void affine_rows(const float* x, float* y, int64_t rows, int64_t C, const float* a, const float* b,
                             bool use_silu) {
  affine_rows_t(x, y, rows, C, a, b, use_silu);
}
DDPM_CLONES void affine_rows(const uint16_t* x, uint16_t* y, int64_t rows, int64_t C, const float* a, const float* b,
                             bool use_silu) {
  affine_rows_t(x, y, rows, C, a, b, use_silu);
}

DDPM_CLONES void grad_channel(const float* x, const float* dout, float* g_out, int64_t n, float a, float b, float mean,
                              bool use_silu, double* sg, double* sgx) {
  double s0 = 0, s1 = 0;
  if (use_silu) {
#pragma omp simd reduction(+ : s0, s1)
    for (int64_t i = 0; i < n; ++i) {
      const float g = dout[i] * silu_grad(x[i] * a + b);
      g_out[i] = g;
      s0 += g;
      s1 += g * (x[i] - mean);
    }
  } else {
#pragma omp simd reduction(+ : s0, s1)
    for (int64_t i = 0; i < n; ++i) {
      const float g = dout[i];
      g_out[i] = g;
      s0 += g;
      s1 += g * (x[i] - mean);
    }
  }
  *sg += s0;
  *sgx += s1;
}

DDPM_CLONES void grad_rows(const float* x, const float* dout, float* g_out, int64_t rows, int64_t C, const float* a,
                           const float* b, const float* mean, bool use_silu, double* sg, double* sgx) {
  grad_rows_t(x, dout, g_out, rows, C, a, b, mean, use_silu, sg, sgx);
}
DDPM_CLONES void grad_rows(const uint16_t* x, const uint16_t* dout, float* g_out, int64_t rows, int64_t C,
                           const float* a, const float* b, const float* mean, bool use_silu, double* sg, double* sgx) {
  grad_rows_t(x, dout, g_out, rows, C, a, b, mean, use_silu, sg, sgx);
}

DDPM_CLONES void combine_channel(const float* g, const float* x, float* dx, int64_t n, float k1, float k2, float k3) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dx[i] = k1 * g[i] + k2 * x[i] + k3;
}

DDPM_CLONES void combine_rows(const float* g, const float* x, float* dx, int64_t rows, int64_t C, const float* k1,
                              const float* k2, const float* k3) {
  combine_rows_t(g, x, dx, rows, C, k1, k2, k3);
}
DDPM_CLONES void combine_rows(const float* g, const uint16_t* x, uint16_t* dx, int64_t rows, int64_t C,
                              const float* k1, const float* k2, const float* k3) {
  combine_rows_t(g, x, dx, rows, C, k1, k2, k3);
}

DDPM_CLONES void dropout(const float* x, float* y, int64_t begin, int64_t n, uint64_t seed, uint64_t keep_threshold,
                         float scale) {
  dropout_t(x, y, begin, n, seed, keep_threshold, scale);
}
DDPM_CLONES void dropout(const uint16_t* x, uint16_t* y, int64_t begin, int64_t n, uint64_t seed,
                         uint64_t keep_threshold, float scale) {
  dropout_t(x, y, begin, n, seed, keep_threshold, scale);
}

}  // namespace ddpm::kernels
