#include "ddpm/likelihood.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace ddpm {

at::Tensor prior_bpd(const GaussianDiffusion& diffusion, const at::Tensor& x0) {
  auto t = at::full({x0.size(0)}, diffusion.num_timesteps() - 1, at::TensorOptions().dtype(at::kLong));
  auto q = diffusion.q_mean_variance(x0, t);
  auto zeros = at::zeros_like(x0);
  return mean_flat(normal_kl(q.mean, q.log_variance, zeros, zeros)) / M_LN2;
}

BpdTerms calc_bpd_loop(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x0,
                       const at::Tensor& y, bool clip_denoised, Decoder decoder, at::Generator gen,
                       const ProgressFn& progress, int64_t timesteps_per_call) {
  const int64_t T = diffusion.num_timesteps(), B = x0.size(0);
  const int64_t K = std::max<int64_t>(1, std::min(timesteps_per_call, T));
  auto opts = x0.options();
  BpdTerms out;
  out.terms = at::zeros({B, T}, opts);
  out.x0_mse = at::zeros({B, T}, opts);
  out.eps_mse = at::zeros({B, T}, opts);
  for (int64_t hi = T - 1; hi >= 0; hi -= K) {
    // Steps hi, hi-1, …, lo in one call of the model: the batch repeated once per step. Noise is drawn step by step
    // in the same order as one step per call, so the packing changes no number.
    const int64_t lo = std::max<int64_t>(0, hi - K + 1), k = hi - lo + 1;
    std::vector<at::Tensor> ts, noises;
    for (int64_t i = hi; i >= lo; --i) {
      ts.push_back(at::full({B}, i, at::TensorOptions().dtype(at::kLong)));
      noises.push_back(at::randn(x0.sizes(), gen, opts.device(at::kCPU)).to(x0.device()));
    }
    auto t = at::cat(ts);
    auto noise = at::cat(noises);
    auto xs = k == 1 ? x0 : at::cat(std::vector<at::Tensor>(static_cast<size_t>(k), x0));
    auto ys = !y.defined() || k == 1 ? y : at::cat(std::vector<at::Tensor>(static_cast<size_t>(k), y));
    auto xt = diffusion.q_sample(xs, t, noise);
    auto p = diffusion.p_mean_variance(model, xt, t, ys, clip_denoised);
    auto terms = vb_terms_bpd(diffusion, p, xs, xt, t, decoder).view({k, B});
    auto x0_mse = mean_flat((p.pred_x0 - xs).pow(2)).view({k, B});
    auto eps = diffusion.predict_eps_from_x0(xt, t, p.pred_x0);
    auto eps_mse = mean_flat((eps - noise).pow(2)).view({k, B});
    for (int64_t j = 0; j < k; ++j) {
      out.terms.select(1, hi - j).copy_(terms[j]);
      out.x0_mse.select(1, hi - j).copy_(x0_mse[j]);
      out.eps_mse.select(1, hi - j).copy_(eps_mse[j]);
    }
    if (progress) progress(T - lo, T);
  }
  out.prior = prior_bpd(diffusion, x0);
  out.total = out.terms.sum(1) + out.prior;
  return out;
}

}  // namespace ddpm
