#include "ddpm/likelihood.h"

#include <cmath>

namespace ddpm {

at::Tensor prior_bpd(const GaussianDiffusion& diffusion, const at::Tensor& x0) {
  auto t = at::full({x0.size(0)}, diffusion.num_timesteps() - 1, at::TensorOptions().dtype(at::kLong));
  auto q = diffusion.q_mean_variance(x0, t);
  auto zeros = at::zeros_like(x0);
  return mean_flat(normal_kl(q.mean, q.log_variance, zeros, zeros)) / M_LN2;
}

BpdTerms calc_bpd_loop(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x0,
                       const at::Tensor& y, bool clip_denoised, Decoder decoder, at::Generator gen,
                       const ProgressFn& progress) {
  const int64_t T = diffusion.num_timesteps(), B = x0.size(0);
  auto opts = x0.options();
  BpdTerms out;
  out.terms = at::zeros({B, T}, opts);
  out.x0_mse = at::zeros({B, T}, opts);
  out.eps_mse = at::zeros({B, T}, opts);
  for (int64_t i = T - 1; i >= 0; --i) {
    auto t = at::full({B}, i, at::TensorOptions().dtype(at::kLong));
    auto noise = at::randn(x0.sizes(), gen, opts.device(at::kCPU)).to(x0.device());
    auto xt = diffusion.q_sample(x0, t, noise);
    auto p = diffusion.p_mean_variance(model, xt, t, y, clip_denoised);
    out.terms.select(1, i).copy_(vb_terms_bpd(diffusion, p, x0, xt, t, decoder));
    out.x0_mse.select(1, i).copy_(mean_flat((p.pred_x0 - x0).pow(2)));
    auto eps = diffusion.predict_eps_from_x0(xt, t, p.pred_x0);
    out.eps_mse.select(1, i).copy_(mean_flat((eps - noise).pow(2)));
    if (progress) progress(T - i, T);
  }
  out.prior = prior_bpd(diffusion, x0);
  out.total = out.terms.sum(1) + out.prior;
  return out;
}

}  // namespace ddpm
