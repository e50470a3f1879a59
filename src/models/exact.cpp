#include "ddpm/models/exact.h"

#include <cmath>

#include "ddpm/errors.h"

namespace ddpm {

ExactMixtureDenoiser::ExactMixtureDenoiser(GaussianMixture mixture, std::vector<double> alphas_cumprod,
                                           MeanType mean_type)
    : mixture_(std::move(mixture)), alphas_cumprod_(std::move(alphas_cumprod)), mean_type_(mean_type) {
  mixture_.validate();
  if (mean_type_ == MeanType::prev_x)
    throw InvalidArgument("exact denoisers predict eps, x0 or v, not prev_x");
  const int64_t K = mixture_.num_components(), D = mixture_.dim();
  auto dbl = at::TensorOptions().dtype(at::kDouble);
  double sum = 0.0;
  for (double w : mixture_.weights) sum += w;
  log_weights_ = at::empty({K}, dbl);
  means_ = at::empty({K, D}, dbl);
  vars_ = at::empty({K}, dbl);
  for (int64_t k = 0; k < K; ++k) {
    log_weights_[k] = std::log(mixture_.weights[k] / sum);
    for (int64_t d = 0; d < D; ++d) means_[k][d] = mixture_.means[k][d];
    vars_[k] = mixture_.stds[k] * mixture_.stds[k];
  }
}

at::Tensor ExactMixtureDenoiser::posterior_mean(const at::Tensor& xt_in, const at::Tensor& t,
                                                const at::Tensor& y) const {
  const int64_t K = mixture_.num_components(), D = mixture_.dim();
  if (xt_in.dim() < 2 || xt_in.numel() != xt_in.size(0) * D)
    throw InvalidArgument("the exact denoiser expects items of " + std::to_string(D) + " values, got shape " +
                          std::string(c10::str(xt_in.sizes())));
  auto xt = xt_in.to(at::kCPU, at::kDouble).reshape({xt_in.size(0), D});
  auto tc = t.to(at::kCPU);
  auto abar_all = at::tensor(at::ArrayRef<double>(alphas_cumprod_), at::TensorOptions().dtype(at::kDouble));
  if (tc.numel() > 0 && (tc.min().item<int64_t>() < 0 || tc.max().item<int64_t>() >= abar_all.size(0)))
    throw InvalidArgument("timestep out of range for the exact denoiser");
  auto a = abar_all.index_select(0, tc).unsqueeze(1);               // [B, 1]
  auto sa = a.sqrt();
  auto v = a * vars_.unsqueeze(0) + (1.0 - a);                      // [B, K]   v_k = a s_k² + 1 - a
  auto diff = xt.unsqueeze(1) - sa.unsqueeze(2) * means_.unsqueeze(0);  // [B, K, D]
  // log π_k N(x_t; √a μ_k, v_k I) up to a constant.
  auto logp = log_weights_.unsqueeze(0) - 0.5 * D * v.log() - 0.5 * diff.pow(2).sum(2) / v;  // [B, K]
  if (y.defined()) {
    // Labels 0..K-1 select one component; the null label K keeps the whole mixture.
    auto yc = y.to(at::kCPU).to(at::kLong);
    if (yc.numel() > 0 && (yc.min().item<int64_t>() < 0 || yc.max().item<int64_t>() > K))
      throw InvalidArgument("class label out of range 0.." + std::to_string(K));
    auto comp = at::arange(K, yc.options()).unsqueeze(0);
    auto keep = (yc.unsqueeze(1) == K) | (comp == yc.unsqueeze(1));
    logp = logp.masked_fill(~keep, -std::numeric_limits<double>::infinity());
  }
  auto r = at::softmax(logp, 1);                                           // responsibilities [B, K]
  auto cond = means_.unsqueeze(0) + (sa * vars_.unsqueeze(0) / v).unsqueeze(2) * diff;  // E[x0 | x_t, k]
  return (r.unsqueeze(2) * cond).sum(1).view(xt_in.sizes());
}

at::Tensor ExactMixtureDenoiser::operator()(const at::Tensor& xt, const at::Tensor& t, const at::Tensor& y) const {
  auto x0 = posterior_mean(xt, t, y);
  auto abar_all = at::tensor(at::ArrayRef<double>(alphas_cumprod_), at::TensorOptions().dtype(at::kDouble));
  std::vector<int64_t> shape(xt.dim(), 1);
  shape[0] = xt.size(0);
  auto a = abar_all.index_select(0, t.to(at::kCPU)).view(shape);
  auto x = xt.to(at::kCPU, at::kDouble);
  at::Tensor out;
  auto eps = (x - a.sqrt() * x0) / (1.0 - a).sqrt();
  switch (mean_type_) {
    case MeanType::eps: out = eps; break;
    case MeanType::x0: out = x0; break;
    case MeanType::v: out = a.sqrt() * eps - (1.0 - a).sqrt() * x0; break;
    case MeanType::prev_x: break;
  }
  return out.to(xt.device(), xt.scalar_type());
}

Denoiser ExactMixtureDenoiser::as_denoiser() const {
  auto self = std::make_shared<ExactMixtureDenoiser>(*this);
  return [self](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) { return (*self)(x, t, y); };
}

ExactNoisyClassifier::ExactNoisyClassifier(GaussianMixture mixture, std::vector<double> alphas_cumprod)
    : mixture_(std::move(mixture)) {
  mixture_.validate();
  const int64_t K = mixture_.num_components(), D = mixture_.dim();
  auto dbl = at::TensorOptions().dtype(at::kDouble);
  alphas_cumprod_ = at::tensor(alphas_cumprod, dbl);
  double sum = 0.0;
  for (double w : mixture_.weights) sum += w;
  std::vector<double> lw, mu, var;
  for (int64_t k = 0; k < K; ++k) {
    lw.push_back(std::log(mixture_.weights[k] / sum));
    for (int64_t d = 0; d < D; ++d) mu.push_back(mixture_.means[k][d]);
    var.push_back(mixture_.stds[k] * mixture_.stds[k]);
  }
  log_weights_ = at::tensor(lw, dbl);
  means_ = at::tensor(mu, dbl).view({K, D});
  vars_ = at::tensor(var, dbl);
}

at::Tensor ExactNoisyClassifier::logits(const at::Tensor& xt, const at::Tensor& t) const {
  const int64_t D = mixture_.dim();
  if (xt.dim() < 2 || xt.numel() != xt.size(0) * D)
    throw InvalidArgument("the exact classifier expects items of " + std::to_string(D) + " values, got shape " +
                          std::string(c10::str(xt.sizes())));
  auto x = xt.reshape({xt.size(0), D}).to(at::kDouble);                          // [B, D]
  auto a = at::index_select(alphas_cumprod_, 0, t.to(at::kCPU).to(at::kLong)).unsqueeze(1);  // [B, 1]
  auto v = a * vars_.unsqueeze(0) + (1.0 - a);                                     // [B, K]
  auto centre = a.sqrt().unsqueeze(2) * means_.unsqueeze(0);                       // [B, K, D]
  auto sq = (x.unsqueeze(1) - centre).pow(2).sum(2);                               // [B, K]
  auto out = log_weights_.unsqueeze(0) - 0.5 * D * v.log() - 0.5 * sq / v;
  return out.to(xt.dtype());
}

std::function<at::Tensor(const at::Tensor&, const at::Tensor&)> ExactNoisyClassifier::as_classifier() const {
  auto self = std::make_shared<ExactNoisyClassifier>(*this);
  return [self](const at::Tensor& x, const at::Tensor& t) { return self->logits(x, t); };
}

}  // namespace ddpm
