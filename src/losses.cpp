#include "ddpm/losses.h"

#include <cmath>

#include "ddpm/errors.h"

namespace ddpm {

LossType parse_loss_type(const std::string& name) { return parse_name<LossType>(name); }
std::string to_string(LossType l) { return name_of(l); }
Decoder parse_decoder(const std::string& name) { return parse_name<Decoder>(name); }
std::string to_string(Decoder d) { return name_of(d); }

at::Tensor mean_flat(const at::Tensor& x) { return x.reshape({x.size(0), -1}).mean(1); }

at::Tensor normal_kl(const at::Tensor& mean1, const at::Tensor& logvar1, const at::Tensor& mean2,
                     const at::Tensor& logvar2) {
  return 0.5 * (-1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2).pow(2) * (-logvar2).exp());
}

at::Tensor standard_normal_cdf(const at::Tensor& x) { return 0.5 * at::erfc(-x * M_SQRT1_2); }

at::Tensor discretized_gaussian_log_likelihood(const at::Tensor& x, const at::Tensor& means,
                                               const at::Tensor& log_scales) {
  const double half_bin = 1.0 / 255.0;
  auto centered = x - means;
  auto inv_std = (-log_scales).exp();
  auto plus_in = inv_std * (centered + half_bin);
  auto min_in = inv_std * (centered - half_bin);
  // Mass of the bin; in the right tail, as a difference of upper-tail masses so it does not cancel to zero.
  auto upper = min_in > 0;
  auto delta = at::where(upper, standard_normal_cdf(-min_in) - standard_normal_cdf(-plus_in),
                         standard_normal_cdf(plus_in) - standard_normal_cdf(min_in));
  const double floor = 1e-12;
  auto log_cdf_plus = standard_normal_cdf(plus_in).clamp_min(floor).log();
  auto log_one_minus_cdf_min = standard_normal_cdf(-min_in).clamp_min(floor).log();
  auto log_delta = delta.clamp_min(floor).log();
  return at::where(x < -0.999, log_cdf_plus, at::where(x > 0.999, log_one_minus_cdf_min, log_delta));
}

at::Tensor gaussian_log_likelihood(const at::Tensor& x, const at::Tensor& means, const at::Tensor& log_scales) {
  auto z = (x - means) * (-log_scales).exp();
  return -0.5 * std::log(2.0 * M_PI) - log_scales - 0.5 * z * z;
}

at::Tensor vb_terms_bpd(const GaussianDiffusion& diffusion, const PMeanVariance& p, const at::Tensor& x0,
                        const at::Tensor& xt, const at::Tensor& t, Decoder decoder) {
  auto q = diffusion.q_posterior_mean_variance(x0, xt, t);
  auto kl = mean_flat(normal_kl(q.mean, q.log_variance, p.mean, p.log_variance)) / M_LN2;
  auto log_scales = 0.5 * p.log_variance;
  auto ll = decoder == Decoder::discrete ? discretized_gaussian_log_likelihood(x0, p.mean, log_scales)
                                         : gaussian_log_likelihood(x0, p.mean, log_scales);
  auto decoder_nll = -mean_flat(ll) / M_LN2;
  return at::where(t.to(kl.device()) == 0, decoder_nll, kl);
}

TrainingLosses training_losses(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x0,
                               const at::Tensor& t, const at::Tensor& y, const at::Tensor& noise, LossType loss,
                               Decoder decoder) {
  TrainingLosses out;
  auto xt = diffusion.q_sample(x0, t, noise);
  auto output = model(xt, diffusion.model_timesteps(t), y);
  const double T = static_cast<double>(diffusion.num_timesteps());

  if (loss == LossType::kl || loss == LossType::rescaled_kl) {
    auto p = diffusion.p_mean_variance_from_output(output, xt, t, false);
    out.vb = vb_terms_bpd(diffusion, p, x0, xt, t, decoder);
    if (loss == LossType::rescaled_kl) out.vb = out.vb * T;
    out.loss = out.vb;
    return out;
  }

  at::Tensor mean_out = output;
  if (learns_variance(diffusion.var_type())) {
    auto parts = output.chunk(2, 1);
    mean_out = parts[0];
    // Improved DDPM §3.1: the VLB term trains the variance only, so it sees the mean detached.
    auto frozen = at::cat({parts[0].detach(), parts[1]}, 1);
    auto p = diffusion.p_mean_variance_from_output(frozen, xt, t, false);
    out.vb = vb_terms_bpd(diffusion, p, x0, xt, t, decoder);
    if (loss != LossType::mse) out.vb = out.vb * (T / 1000.0);  // λ = 0.001 of L_vlb = T · E_t[L_t]
  }
  at::Tensor target;
  switch (diffusion.mean_type()) {
    case MeanType::eps: target = noise; break;
    case MeanType::x0: target = x0; break;
    case MeanType::prev_x: target = diffusion.q_posterior_mean_variance(x0, xt, t).mean; break;
    case MeanType::v: target = diffusion.predict_v(x0, t, noise); break;
  }
  if (!mean_out.sizes().equals(target.sizes()))
    throw InvalidArgument("model output shape " + std::string(c10::str(mean_out.sizes())) +
                          " does not match the data shape " + std::string(c10::str(target.sizes())));
  out.mse = mean_flat((target - mean_out).pow(2));
  out.loss = out.vb.defined() ? out.mse + out.vb : out.mse;
  return out;
}

}  // namespace ddpm
