// Inner loops of the fused GroupNorm(+SiLU) (group_norm.cpp) and the hashed dropout (dropout.cpp), on raw float
// arrays. They live in their own translation unit, compiled without torch headers and with -ffast-math (so exp
// vectorises through glibc's libmvec) and, on x86-64, cloned for AVX-512 / AVX2 / baseline, chosen at load time by
// the CPU's features.
#pragma once

#include <cstdint>

namespace ddpm::kernels {

// Overloads taking uint16_t arrays read and write bfloat16 (the upper 16 bits of a float; stores round to nearest
// even) and compute in float, statistics in double, as the float ones do.

/// Sum and sum of squared deviations from `mean` of x[0..n), accumulated in double.
double sum(const float* x, int64_t n);
double sum_sq_dev(const float* x, int64_t n, float mean);

/// NHWC statistics: for each of `rows` rows of C values, acc[c] += x[r, c] (`dev` null) or acc[c] += (x[r, c] − dev[c])².
void row_sums(const float* x, int64_t rows, int64_t C, const float* dev, double* acc);
void row_sums(const uint16_t* x, int64_t rows, int64_t C, const float* dev, double* acc);

/// y = x·a + b, then SiLU (y·σ(y)) when `silu`: one channel (n contiguous values) with scalars a, b.
void affine_channel(const float* x, float* y, int64_t n, float a, float b, bool silu);
/// The same over `rows` rows of C channels with per-channel a[c], b[c].
void affine_rows(const float* x, float* y, int64_t rows, int64_t C, const float* a, const float* b, bool silu);
void affine_rows(const uint16_t* x, uint16_t* y, int64_t rows, int64_t C, const float* a, const float* b, bool silu);

/// Backward, first pass, one channel: z = x·a + b; g = dout·SiLU'(z) (or dout); writes g to `g_out` and adds Σg and
/// Σ g·(x − mean) to *sg and *sgx.
void grad_channel(const float* x, const float* dout, float* g_out, int64_t n, float a, float b, float mean, bool silu,
                  double* sg, double* sgx);
/// The same over rows with per-channel a, b, mean; sg[c], sgx[c] accumulate.
void grad_rows(const float* x, const float* dout, float* g_out, int64_t rows, int64_t C, const float* a,
               const float* b, const float* mean, bool silu, double* sg, double* sgx);
void grad_rows(const uint16_t* x, const uint16_t* dout, float* g_out, int64_t rows, int64_t C, const float* a,
               const float* b, const float* mean, bool silu, double* sg, double* sgx);

/// dx = k1·g + k2·x + k3 (may run in place on g), one channel with scalars.
void combine_channel(const float* g, const float* x, float* dx, int64_t n, float k1, float k2, float k3);
/// The same over rows with per-channel k1[c], k2[c], k3[c].
void combine_rows(const float* g, const float* x, float* dx, int64_t rows, int64_t C, const float* k1, const float* k2,
                  const float* k3);
void combine_rows(const float* g, const uint16_t* x, uint16_t* dx, int64_t rows, int64_t C, const float* k1,
                  const float* k2, const float* k3);

/// Inverted dropout on elements [begin, begin + n) of a tensor (x and y point at element `begin`): element i is kept
/// when a counter-based hash of (i, seed) is below `keep_threshold` (= keep probability · 2³²) and then scaled by
/// `scale`; dropped elements are 0. The same (seed, i) always gives the same decision, so backward regenerates the mask.
void dropout(const float* x, float* y, int64_t begin, int64_t n, uint64_t seed, uint64_t keep_threshold, float scale);
void dropout(const uint16_t* x, uint16_t* y, int64_t begin, int64_t n, uint64_t seed, uint64_t keep_threshold,
             float scale);

}  // namespace ddpm::kernels
