#include "ddpm/diffusion.h"

#include <cmath>

#include "ddpm/errors.h"

namespace ddpm {
namespace {

at::Tensor to_tensor(const std::vector<double>& v) {
  return at::tensor(at::ArrayRef<double>(v), at::TensorOptions().dtype(at::kDouble));
}

template <class F>
std::vector<double> map(const std::vector<double>& a, F f) {
  std::vector<double> out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = f(a[i], i);
  return out;
}

}  // namespace

MeanType parse_mean_type(const std::string& name) { return parse_name<MeanType>(name); }
VarType parse_var_type(const std::string& name) { return parse_name<VarType>(name); }
std::string to_string(MeanType m) { return name_of(m); }
std::string to_string(VarType v) { return name_of(v); }

GaussianDiffusion::GaussianDiffusion(Schedule schedule, MeanType mean_type, VarType var_type)
    : schedule_(std::move(schedule)), mean_type_(mean_type), var_type_(var_type) {
  betas_ = schedule_.betas;
  const int64_t T = num_timesteps();
  if (T < 1) throw InvalidArgument("a diffusion needs at least one timestep");
  if (static_cast<int64_t>(schedule_.timestep_map.size()) != T)
    throw InvalidArgument("schedule's timestep map does not match its betas");
  alphas_cumprod_ = ddpm::alphas_cumprod(betas_);
  alphas_cumprod_prev_.assign(T, 1.0);
  for (int64_t i = 1; i < T; ++i) alphas_cumprod_prev_[i] = alphas_cumprod_[i - 1];

  const auto& ac = alphas_cumprod_;
  const auto& acp = alphas_cumprod_prev_;
  // DDPM eq. 7: β̃_t = (1-ᾱ_{t-1})/(1-ᾱ_t) β_t; zero at the first step.
  posterior_variance_ = map(betas_, [&](double b, size_t i) { return b * (1.0 - acp[i]) / (1.0 - ac[i]); });
  // log β̃ "clipped": the first entry (0) is replaced by the second (improved-diffusion).
  posterior_log_variance_clipped_ = map(posterior_variance_, [&](double, size_t i) {
    const double v = (i == 0 && T > 1) ? posterior_variance_[1] : posterior_variance_[i];
    return std::log(v > 0.0 ? v : betas_[0]);
  });
  // fixed_large: σ² = β_t, with σ_1² = β̃_2 (as the reference code).
  const auto fixed_large = map(betas_, [&](double b, size_t i) {
    return (i == 0 && T > 1) ? posterior_variance_[1] : b;
  });

  t_sqrt_ac_ = to_tensor(map(ac, [](double a, size_t) { return std::sqrt(a); }));
  t_sqrt_1m_ac_ = to_tensor(map(ac, [](double a, size_t) { return std::sqrt(1.0 - a); }));
  t_one_m_ac_ = to_tensor(map(ac, [](double a, size_t) { return 1.0 - a; }));
  t_log_1m_ac_ = to_tensor(map(ac, [](double a, size_t) { return std::log(1.0 - a); }));
  t_sqrt_recip_ac_ = to_tensor(map(ac, [](double a, size_t) { return std::sqrt(1.0 / a); }));
  t_sqrt_recipm1_ac_ = to_tensor(map(ac, [](double a, size_t) { return std::sqrt(1.0 / a - 1.0); }));
  t_post_var_ = to_tensor(posterior_variance_);
  t_post_logvar_ = to_tensor(posterior_log_variance_clipped_);
  // DDPM eq. 7: μ̃_t = coef1 x0 + coef2 x_t.
  t_post_c1_ = to_tensor(map(betas_, [&](double b, size_t i) { return b * std::sqrt(acp[i]) / (1.0 - ac[i]); }));
  t_post_c2_ = to_tensor(
      map(betas_, [&](double b, size_t i) { return (1.0 - acp[i]) * std::sqrt(1.0 - b) / (1.0 - ac[i]); }));
  t_log_betas_ = to_tensor(map(betas_, [](double b, size_t) { return std::log(b); }));
  t_fixed_large_var_ = to_tensor(fixed_large);
  t_fixed_large_logvar_ = to_tensor(map(fixed_large, [](double v, size_t) { return std::log(v); }));
  t_map_ = at::tensor(at::ArrayRef<int64_t>(schedule_.timestep_map), at::TensorOptions().dtype(at::kLong));
}

void GaussianDiffusion::check_timesteps(const at::Tensor& t) const {
  if (!t.defined() || t.dim() != 1 || t.scalar_type() != at::kLong)
    throw InvalidArgument("timesteps must be a 1-D int64 tensor");
  if (t.numel() == 0) return;
  const int64_t lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
  if (lo < 0 || hi >= num_timesteps())
    throw InvalidArgument("timestep " + std::to_string(lo < 0 ? lo : hi) + " is out of range 0.." +
                          std::to_string(num_timesteps() - 1));
}

at::Tensor GaussianDiffusion::extract(const at::Tensor& table, const at::Tensor& t, const at::Tensor& like) const {
  auto idx = t.to(table.device());
  auto v = table.index_select(0, idx).to(like.device(), like.scalar_type());
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = t.size(0);
  return v.view(shape);
}

at::Tensor GaussianDiffusion::extract(const std::vector<double>& table, const at::Tensor& t,
                                      const at::Tensor& like) const {
  return extract(to_tensor(table), t, like);
}

at::Tensor GaussianDiffusion::model_timesteps(const at::Tensor& t) const {
  return t_map_.index_select(0, t.to(at::kCPU)).to(t.device());
}

GaussianMeanVariance GaussianDiffusion::q_mean_variance(const at::Tensor& x0, const at::Tensor& t) const {
  GaussianMeanVariance out;
  out.mean = extract(t_sqrt_ac_, t, x0) * x0;
  out.variance = extract(t_one_m_ac_, t, x0).expand_as(x0);
  out.log_variance = extract(t_log_1m_ac_, t, x0).expand_as(x0);
  return out;
}

at::Tensor GaussianDiffusion::q_sample(const at::Tensor& x0, const at::Tensor& t, const at::Tensor& noise) const {
  return extract(t_sqrt_ac_, t, x0) * x0 + extract(t_sqrt_1m_ac_, t, x0) * noise;
}

GaussianMeanVariance GaussianDiffusion::q_posterior_mean_variance(const at::Tensor& x0, const at::Tensor& xt,
                                                                   const at::Tensor& t) const {
  GaussianMeanVariance out;
  out.mean = extract(t_post_c1_, t, xt) * x0 + extract(t_post_c2_, t, xt) * xt;
  out.variance = extract(t_post_var_, t, xt).expand_as(xt);
  out.log_variance = extract(t_post_logvar_, t, xt).expand_as(xt);
  return out;
}

at::Tensor GaussianDiffusion::predict_x0_from_eps(const at::Tensor& xt, const at::Tensor& t,
                                                  const at::Tensor& eps) const {
  // x̂0 = (x_t - √(1-ᾱ) ε)/√ᾱ = √(1/ᾱ) x_t - √(1/ᾱ - 1) ε.
  return extract(t_sqrt_recip_ac_, t, xt) * xt - extract(t_sqrt_recipm1_ac_, t, xt) * eps;
}

at::Tensor GaussianDiffusion::predict_eps_from_x0(const at::Tensor& xt, const at::Tensor& t,
                                                  const at::Tensor& x0) const {
  return (extract(t_sqrt_recip_ac_, t, xt) * xt - x0) / extract(t_sqrt_recipm1_ac_, t, xt);
}

at::Tensor GaussianDiffusion::predict_x0_from_v(const at::Tensor& xt, const at::Tensor& t, const at::Tensor& v) const {
  // v = √ᾱ ε - √(1-ᾱ) x0  ⇒  x̂0 = √ᾱ x_t - √(1-ᾱ) v (Salimans & Ho 2022).
  return extract(t_sqrt_ac_, t, xt) * xt - extract(t_sqrt_1m_ac_, t, xt) * v;
}

at::Tensor GaussianDiffusion::predict_v(const at::Tensor& x0, const at::Tensor& t, const at::Tensor& eps) const {
  return extract(t_sqrt_ac_, t, x0) * eps - extract(t_sqrt_1m_ac_, t, x0) * x0;
}

at::Tensor GaussianDiffusion::predict_x0_from_xprev(const at::Tensor& xt, const at::Tensor& t,
                                                    const at::Tensor& xprev) const {
  // Inverts μ̃ = c1 x0 + c2 x_t.
  return (xprev - extract(t_post_c2_, t, xt) * xt) / extract(t_post_c1_, t, xt);
}

PMeanVariance GaussianDiffusion::p_mean_variance_from_output(const at::Tensor& output, const at::Tensor& xt,
                                                             const at::Tensor& t, bool clip_denoised) const {
  PMeanVariance out;
  at::Tensor mean_out = output;
  if (learns_variance(var_type_)) {
    if (output.dim() < 2 || output.size(1) != 2 * xt.size(1))
      throw InvalidArgument("a model with a learned variance must output twice the data channels (" +
                            std::to_string(2 * xt.size(1)) + "), got " +
                            std::to_string(output.dim() < 2 ? 0 : output.size(1)));
    auto parts = output.chunk(2, 1);
    mean_out = parts[0];
    out.var_output = parts[1];
    if (var_type_ == VarType::learned) {
      out.log_variance = out.var_output;
    } else {
      // Improved DDPM eq. 15: interpolate log β̃_t (clipped) and log β_t with frac = (v + 1)/2.
      auto min_log = extract(t_post_logvar_, t, xt);
      auto max_log = extract(t_log_betas_, t, xt);
      auto frac = (out.var_output + 1) / 2;
      out.log_variance = frac * max_log + (1 - frac) * min_log;
    }
    out.variance = out.log_variance.exp();
  } else {
    if (!output.sizes().equals(xt.sizes()))
      throw InvalidArgument("model output shape " + std::string(c10::str(output.sizes())) +
                            " does not match the data shape " + std::string(c10::str(xt.sizes())));
    const bool small = var_type_ == VarType::fixed_small;
    out.variance = extract(small ? t_post_var_ : t_fixed_large_var_, t, xt).expand_as(xt);
    out.log_variance = extract(small ? t_post_logvar_ : t_fixed_large_logvar_, t, xt).expand_as(xt);
  }
  out.model_output = mean_out;

  auto process = [&](at::Tensor x) { return clip_denoised ? x.clamp(-1, 1) : x; };
  switch (mean_type_) {
    case MeanType::prev_x:
      out.pred_x0 = process(predict_x0_from_xprev(xt, t, mean_out));
      out.mean = mean_out;
      break;
    case MeanType::x0:
      out.pred_x0 = process(mean_out);
      out.mean = q_posterior_mean_variance(out.pred_x0, xt, t).mean;
      break;
    case MeanType::eps:
      out.pred_x0 = process(predict_x0_from_eps(xt, t, mean_out));
      out.mean = q_posterior_mean_variance(out.pred_x0, xt, t).mean;
      break;
    case MeanType::v:
      out.pred_x0 = process(predict_x0_from_v(xt, t, mean_out));
      out.mean = q_posterior_mean_variance(out.pred_x0, xt, t).mean;
      break;
  }
  return out;
}

PMeanVariance GaussianDiffusion::p_mean_variance(const Denoiser& model, const at::Tensor& xt, const at::Tensor& t,
                                                 const at::Tensor& y, bool clip_denoised) const {
  return p_mean_variance_from_output(model(xt, model_timesteps(t), y), xt, t, clip_denoised);
}

}  // namespace ddpm
