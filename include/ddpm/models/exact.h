// Bayes-optimal denoisers for data of known density (SPEC §9). They stand anywhere a trained network is
// accepted, so samplers, losses and likelihoods can be checked with no training at all.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "ddpm/diffusion.h"
#include "ddpm/mixture.h"

namespace ddpm {

/// The exact denoiser of a Gaussian mixture under the diffusion whose ᾱ (of the *original*, unrespaced schedule)
/// is given. Output is E[ε | x_t], E[x0 | x_t] or E[v | x_t] according to `mean_type` (prev_x is not offered:
/// it depends on the respacing). With labels y in 0..K-1 it is the exact denoiser of component y alone (a class
/// conditional model); label K (the null label) or no labels give the whole mixture.
class ExactMixtureDenoiser {
 public:
  ExactMixtureDenoiser(GaussianMixture mixture, std::vector<double> alphas_cumprod, MeanType mean_type = MeanType::eps);

  /// E[x0 | x_t] (SPEC §9), computed in double.
  at::Tensor posterior_mean(const at::Tensor& xt, const at::Tensor& t, const at::Tensor& y) const;
  at::Tensor operator()(const at::Tensor& xt, const at::Tensor& t, const at::Tensor& y) const;
  Denoiser as_denoiser() const;
  const GaussianMixture& mixture() const { return mixture_; }
  int64_t null_label() const { return mixture_.num_components(); }

 private:
  GaussianMixture mixture_;
  std::vector<double> alphas_cumprod_;
  MeanType mean_type_;
  at::Tensor log_weights_, means_, vars_;  // [K], [K, D], [K] in double
};

}  // namespace ddpm
