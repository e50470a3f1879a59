// Training objectives and the terms of the variational bound (SPEC §3).
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "ddpm/diffusion.h"

namespace ddpm {

/// mse = L_simple (+ the VLB term when the variance is learned, as improved-diffusion);
/// rescaled_mse = hybrid = L_simple + λ L_vlb with λ = 0.001, i.e. the one-step VLB term × T/1000
/// (Improved DDPM §3.1; the VLB term sees the mean detached, so only the variance learns from it);
/// kl = the one-step VLB term; rescaled_kl = that × T (an estimate of the whole bound).
enum class LossType { mse, rescaled_mse, kl, rescaled_kl, hybrid };
template <>
struct EnumNames<LossType> {
  static constexpr const char* what = "loss";
  static constexpr std::pair<LossType, const char*> table[] = {{LossType::mse, "mse"},
                                                               {LossType::rescaled_mse, "rescaled_mse"},
                                                               {LossType::kl, "kl"},
                                                               {LossType::rescaled_kl, "rescaled_kl"},
                                                               {LossType::hybrid, "hybrid"}};
};
LossType parse_loss_type(const std::string& name);
std::string to_string(LossType l);

/// The likelihood of x0 under p(x0 | x1): `discrete` = DDPM eq. 13 on the 256-level grid in [-1, 1];
/// `continuous` = the Gaussian density (for real-valued data such as the 2-D toy sets).
enum class Decoder { discrete, continuous };
template <>
struct EnumNames<Decoder> {
  static constexpr const char* what = "decoder";
  static constexpr std::pair<Decoder, const char*> table[] = {{Decoder::discrete, "discrete"},
                                                              {Decoder::continuous, "continuous"}};
};
Decoder parse_decoder(const std::string& name);
std::string to_string(Decoder d);

/// Mean over every dimension but the first.
at::Tensor mean_flat(const at::Tensor& x);

/// KL(N(μ1, e^{lv1}) || N(μ2, e^{lv2})) elementwise, in nats.
at::Tensor normal_kl(const at::Tensor& mean1, const at::Tensor& logvar1, const at::Tensor& mean2,
                     const at::Tensor& logvar2);

/// Standard normal CDF Φ(x), through erfc so that both tails keep their relative precision.
at::Tensor standard_normal_cdf(const at::Tensor& x);

/// log p(x) elementwise of the discretised Gaussian decoder (DDPM eq. 13): the mass of N(μ, e^{2 log_scale}) on
/// [x - 1/255, x + 1/255], the edge bins open to -∞ at x = -1 and +∞ at x = 1; floored at 1e-12.
at::Tensor discretized_gaussian_log_likelihood(const at::Tensor& x, const at::Tensor& means,
                                               const at::Tensor& log_scales);

/// log N(x; μ, e^{2 log_scale}) elementwise.
at::Tensor gaussian_log_likelihood(const at::Tensor& x, const at::Tensor& means, const at::Tensor& log_scales);

/// The VLB term of step t for each example, in bits per dimension: KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) for
/// t > 0 and -log p(x0 | x1) at t = 0. `p` is p(x_{t-1} | x_t) as p_mean_variance returns it.
at::Tensor vb_terms_bpd(const GaussianDiffusion& diffusion, const PMeanVariance& p, const at::Tensor& x0,
                        const at::Tensor& xt, const at::Tensor& t, Decoder decoder);

struct TrainingLosses {
  at::Tensor loss;  ///< per-example objective
  at::Tensor mse;   ///< per-example L_simple term (undefined for kl losses)
  at::Tensor vb;    ///< per-example VLB term as added to the loss (undefined when none)
};

/// The per-example training objective at timesteps t (Algorithm 1 and Improved DDPM §3).
TrainingLosses training_losses(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x0,
                               const at::Tensor& t, const at::Tensor& y, const at::Tensor& noise, LossType loss,
                               Decoder decoder = Decoder::discrete);

}  // namespace ddpm
