// Shared helpers of the test suite: seeded generators, comparisons, and plain-double re-derivations.
#pragma once

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "ddpm/compat.h"
#include "ddpm/diffusion.h"
#include "ddpm/models/unet.h"
#include "ddpm/schedule.h"

namespace ddpm::test {

/// A two-level U-Net of 1×16×16 images, small enough to build and run in a test; attention only where asked.
inline UNetOptions tiny_unet_options(std::vector<int64_t> attention_resolutions = {}) {
  UNetOptions o;
  o.in_channels = 1;
  o.image_size = 16;
  o.base_channels = 8;
  o.channel_mult = {1, 2};
  o.num_res_blocks = 1;
  o.attention_resolutions = std::move(attention_resolutions);
  o.groups = 4;
  return o;
}

inline at::Generator gen(uint64_t seed) { return compat::make_cpu_generator(seed); }

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

inline at::Tensor full_t(int64_t n, int64_t t) { return at::full({n}, t, at::TensorOptions().dtype(at::kLong)); }

inline GaussianDiffusion make_diffusion(int64_t T = 1000, MeanType m = MeanType::eps,
                                        VarType v = VarType::fixed_large, BetaSchedule s = BetaSchedule::linear) {
  return GaussianDiffusion(Schedule::make(s, T), m, v);
}

/// DDPM's linear β, written out independently of the library.
inline std::vector<double> linear_betas(int64_t T) {
  std::vector<double> b(T);
  const double s = 1000.0 / T;
  for (int64_t i = 0; i < T; ++i) b[i] = T == 1 ? s * 1e-4 : s * 1e-4 + (s * 0.02 - s * 1e-4) * i / double(T - 1);
  return b;
}

inline std::vector<double> cumprod(const std::vector<double>& betas) {
  std::vector<double> a(betas.size());
  double acc = 1;
  for (size_t i = 0; i < betas.size(); ++i) a[i] = acc *= 1 - betas[i];
  return a;
}

inline double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

}  // namespace ddpm::test
