// The Gaussian diffusion process (SPEC §1–2): forward marginals, the true posterior, the parameterisations of
// the network output, and p(x_{t-1} | x_t). The process never owns a network: it receives a Denoiser.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <vector>

#include "ddpm/schedule.h"

namespace ddpm {

/// What the network's output (its first half, when the variance is learned) predicts.
enum class MeanType { eps, x0, prev_x, v };
/// How the reverse-process variance is chosen.
enum class VarType { fixed_small, fixed_large, learned, learned_range };
template <>
struct EnumNames<MeanType> {
  static constexpr const char* what = "mean type";
  static constexpr std::pair<MeanType, const char*> table[] = {
      {MeanType::eps, "eps"}, {MeanType::x0, "x0"}, {MeanType::prev_x, "prev_x"}, {MeanType::v, "v"}};
};
template <>
struct EnumNames<VarType> {
  static constexpr const char* what = "variance type";
  static constexpr std::pair<VarType, const char*> table[] = {{VarType::fixed_small, "fixed_small"},
                                                              {VarType::fixed_large, "fixed_large"},
                                                              {VarType::learned, "learned"},
                                                              {VarType::learned_range, "learned_range"}};
};

MeanType parse_mean_type(const std::string& name);
VarType parse_var_type(const std::string& name);
std::string to_string(MeanType m);
std::string to_string(VarType v);
/// True when the network also outputs the variance (twice the data channels, split along dim 1).
inline bool learns_variance(VarType v) { return v == VarType::learned || v == VarType::learned_range; }

/// A network seen through a callback: (x_t, t, y) → output. t holds the *original* timestep indices
/// (int64, shape [B]); y holds class labels (int64, [B]) or is undefined for an unconditional call.
using Denoiser = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y)>;

/// Progress of a long loop: `done` of `total` units finished.
using ProgressFn = std::function<void(int64_t done, int64_t total)>;

/// A diagonal Gaussian: q(x_t | x0) or the posterior q(x_{t-1} | x_t, x0).
struct GaussianMeanVariance {
  at::Tensor mean, variance, log_variance;
};

/// p_θ(x_{t-1} | x_t) and what was predicted on the way.
struct PMeanVariance {
  at::Tensor mean, variance, log_variance;
  at::Tensor pred_x0;       ///< x̂0 (clipped to [-1, 1] when asked)
  at::Tensor model_output;  ///< the mean part of the raw output (ε̂, x̂0, μ or v by mean type)
  at::Tensor var_output;    ///< the variance part of the raw output (undefined unless learned)
};

class GaussianDiffusion {
 public:
  GaussianDiffusion(Schedule schedule, MeanType mean_type, VarType var_type);

  int64_t num_timesteps() const { return static_cast<int64_t>(betas_.size()); }
  MeanType mean_type() const { return mean_type_; }
  VarType var_type() const { return var_type_; }
  const Schedule& schedule() const { return schedule_; }

  // Double-precision tables, one entry per step of this (possibly respaced) process.
  const std::vector<double>& betas() const { return betas_; }
  const std::vector<double>& alphas_cumprod() const { return alphas_cumprod_; }
  const std::vector<double>& alphas_cumprod_prev() const { return alphas_cumprod_prev_; }
  const std::vector<double>& posterior_variance() const { return posterior_variance_; }
  const std::vector<double>& posterior_log_variance_clipped() const { return posterior_log_variance_clipped_; }

  /// The original timesteps (what the network receives) for indices t of this process.
  at::Tensor model_timesteps(const at::Tensor& t) const;

  /// q(x_t | x0) = N(√ᾱ_t x0, (1-ᾱ_t) I): mean, variance, log variance.
  GaussianMeanVariance q_mean_variance(const at::Tensor& x0, const at::Tensor& t) const;
  /// x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε.
  at::Tensor q_sample(const at::Tensor& x0, const at::Tensor& t, const at::Tensor& noise) const;
  /// q(x_{t-1} | x_t, x0) = N(μ̃_t, β̃_t I) (DDPM eq. 6–7), log variance clipped at t = 0.
  GaussianMeanVariance q_posterior_mean_variance(const at::Tensor& x0, const at::Tensor& xt,
                                                  const at::Tensor& t) const;

  at::Tensor predict_x0_from_eps(const at::Tensor& xt, const at::Tensor& t, const at::Tensor& eps) const;
  at::Tensor predict_eps_from_x0(const at::Tensor& xt, const at::Tensor& t, const at::Tensor& x0) const;
  at::Tensor predict_x0_from_v(const at::Tensor& xt, const at::Tensor& t, const at::Tensor& v) const;
  at::Tensor predict_v(const at::Tensor& x0, const at::Tensor& t, const at::Tensor& eps) const;
  at::Tensor predict_x0_from_xprev(const at::Tensor& xt, const at::Tensor& t, const at::Tensor& xprev) const;

  /// Interprets a network output (SPEC §2) as p(x_{t-1} | x_t).
  PMeanVariance p_mean_variance_from_output(const at::Tensor& output, const at::Tensor& xt, const at::Tensor& t,
                                            bool clip_denoised) const;
  /// Calls the denoiser at the original timesteps of t, then interprets its output.
  PMeanVariance p_mean_variance(const Denoiser& model, const at::Tensor& xt, const at::Tensor& t,
                                const at::Tensor& y, bool clip_denoised) const;

  /// Per-example coefficient table[t], shaped to broadcast against `like` and in its dtype.
  at::Tensor extract(const at::Tensor& table, const at::Tensor& t, const at::Tensor& like) const;
  /// The same for a caller's own table (doubles), e.g. one a sampler derives.
  at::Tensor extract(const std::vector<double>& table, const at::Tensor& t, const at::Tensor& like) const;

  /// Checks that t holds valid indices of this process; throws InvalidArgument otherwise.
  void check_timesteps(const at::Tensor& t) const;

 private:
  Schedule schedule_;
  MeanType mean_type_;
  VarType var_type_;
  std::vector<double> betas_, alphas_cumprod_, alphas_cumprod_prev_, posterior_variance_,
      posterior_log_variance_clipped_;
  // The same tables as float64 tensors, for indexing by a batch of timesteps.
  at::Tensor t_sqrt_ac_, t_sqrt_1m_ac_, t_log_1m_ac_, t_one_m_ac_, t_sqrt_recip_ac_, t_sqrt_recipm1_ac_, t_post_var_,
      t_post_logvar_, t_post_c1_, t_post_c2_, t_log_betas_, t_fixed_large_var_, t_fixed_large_logvar_, t_map_;
};

}  // namespace ddpm
