#include "ddpm/eval/nll.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>

#include "ddpm/compat.h"
#include "ddpm/errors.h"

namespace ddpm {

NllSummary evaluate_nll(const GaussianDiffusion& diffusion, const Denoiser& model, const at::Tensor& x,
                        const at::Tensor& labels, const NllOptions& o) {
  if (!x.defined() || x.size(0) < 1) throw InvalidArgument("no data to evaluate");
  if (o.batch < 1) throw InvalidArgument("batch must be at least 1");
  c10::InferenceMode guard;
  const int64_t N = x.size(0), T = diffusion.num_timesteps();
  const int64_t batches = (N + o.batch - 1) / o.batch;
  auto gen = compat::make_cpu_generator(o.seed);
  std::vector<at::Tensor> totals, priors, terms, mses;
  for (int64_t b = 0; b < batches; ++b) {
    auto xb = x.slice(0, b * o.batch, std::min(N, (b + 1) * o.batch));
    auto yb = labels.defined() ? labels.slice(0, b * o.batch, std::min(N, (b + 1) * o.batch)) : at::Tensor();
    ProgressFn inner;
    if (o.progress) inner = [&](int64_t done, int64_t) { o.progress(b * T + done, batches * T); };
    // A batch smaller than o.batch (a small subset, or the last batch) packs several timesteps into each call.
    const int64_t per_call = std::max<int64_t>(1, o.batch / xb.size(0));
    auto r = calc_bpd_loop(diffusion, model, xb, yb, o.clip_denoised, o.decoder, gen, inner, per_call);
    totals.push_back(r.total.to(at::kDouble));
    priors.push_back(r.prior.to(at::kDouble));
    terms.push_back(r.terms.to(at::kDouble).sum(0));
    mses.push_back(r.x0_mse.to(at::kDouble).sum(0));
  }
  NllSummary s;
  s.per_example = at::cat(totals);
  s.count = N;
  s.bits_per_dim = s.per_example.mean().item<double>();
  s.stderr_ = N > 1 ? s.per_example.std().item<double>() / std::sqrt(static_cast<double>(N)) : 0.0;
  s.prior_bpd = at::cat(priors).mean().item<double>();
  auto term_mean = at::stack(terms).sum(0) / static_cast<double>(N);
  auto mse_mean = at::stack(mses).sum(0) / static_cast<double>(N);
  s.terms.assign(term_mean.data_ptr<double>(), term_mean.data_ptr<double>() + T);
  s.x0_mse.assign(mse_mean.data_ptr<double>(), mse_mean.data_ptr<double>() + T);
  return s;
}

RateDistortion rate_distortion(const NllSummary& s) {
  const int64_t T = static_cast<int64_t>(s.terms.size());
  if (T < 1 || static_cast<int64_t>(s.x0_mse.size()) != T) throw InvalidArgument("rate-distortion needs every term");
  RateDistortion rd;
  double rate = s.prior_bpd;  // x_T sent
  for (int64_t t = T; t >= 1; --t) {
    // terms[t] is L_t, the cost of x_t given x_{t+1} (index 0 is L_0, the decoder); x_T costs the prior alone.
    if (t < T) rate += s.terms[t];
    rd.t.push_back(t);
    rd.rate_bpd.push_back(rate);
    rd.distortion_rmse.push_back(std::sqrt(std::max(0.0, s.x0_mse[t - 1])) * 127.5);
  }
  return rd;
}

}  // namespace ddpm
