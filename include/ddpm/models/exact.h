// Bayes-optimal denoisers for data of known density (SPEC §9). They stand anywhere a trained network is
// accepted, so samplers, losses and likelihoods can be checked with no training at all.
#pragma once

#include <ATen/ATen.h>

#include <functional>
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

/// The exact noise-aware classifier of a Gaussian mixture: p(k | x_t) ∝ w_k N(x_t; √ᾱ_t μ_k, (ᾱ_t σ_k² + 1 - ᾱ_t) I),
/// the posterior responsibility of each diffused component (ᾱ of the original schedule, t original timesteps).
/// Differentiable in x_t (computed in double, returned in x's dtype).
class ExactNoisyClassifier {
 public:
  ExactNoisyClassifier(GaussianMixture mixture, std::vector<double> alphas_cumprod);
  /// log p(k | x_t) up to a constant per item: logits [B, K].
  at::Tensor logits(const at::Tensor& xt, const at::Tensor& t) const;
  std::function<at::Tensor(const at::Tensor&, const at::Tensor&)> as_classifier() const;
  int64_t num_classes() const { return mixture_.num_components(); }

 private:
  GaussianMixture mixture_;
  at::Tensor alphas_cumprod_, log_weights_, means_, vars_;  // double
};

}  // namespace ddpm
