#include "ddpm/eval/metrics.h"

#include <cmath>

#include "ddpm/errors.h"
#include "ddpm/io/safetensors.h"

namespace ddpm {

FeatureStats feature_stats(const at::Tensor& features) {
  if (!features.defined() || features.dim() != 2 || features.size(0) < 2)
    throw InvalidArgument("feature statistics need a matrix [N, D] with N ≥ 2");
  auto f = features.to(at::kDouble);
  FeatureStats s;
  s.count = f.size(0);
  s.mean = f.mean(0);
  auto c = f - s.mean;
  s.cov = at::matmul(c.t(), c) / static_cast<double>(s.count - 1);
  return s;
}

namespace {

/// Symmetric square root through an eigendecomposition (negative rounding eigenvalues clamped to 0).
at::Tensor sym_sqrt(const at::Tensor& m) {
  auto [w, v] = at::linalg_eigh((m + m.t()) * 0.5);
  return at::matmul(v * w.clamp_min(0).sqrt().unsqueeze(0), v.t());
}

}  // namespace

double frechet_distance(const FeatureStats& a, const FeatureStats& b) {
  if (!a.mean.defined() || !b.mean.defined() || !a.mean.sizes().equals(b.mean.sizes()) ||
      !a.cov.sizes().equals(b.cov.sizes()))
    throw InvalidArgument("FID compares statistics of one feature size (got " + std::string(c10::str(a.mean.sizes())) +
                          " and " + std::string(c10::str(b.mean.sizes())) + ")");
  auto m1 = a.mean.to(at::kDouble), m2 = b.mean.to(at::kDouble);
  auto s1 = a.cov.to(at::kDouble), s2 = b.cov.to(at::kDouble);
  auto r = sym_sqrt(s1);
  auto inner = at::matmul(at::matmul(r, s2), r);
  auto eig = at::linalg_eigvalsh((inner + inner.t()) * 0.5);
  const double tr_sqrt = eig.clamp_min(0).sqrt().sum().item<double>();
  const double d = (m1 - m2).pow(2).sum().item<double>() + s1.trace().item<double>() + s2.trace().item<double>() -
                   2.0 * tr_sqrt;
  return std::max(0.0, d);
}

std::pair<double, double> inception_score(const at::Tensor& probs, int64_t splits) {
  if (!probs.defined() || probs.dim() != 2 || probs.size(0) < 1)
    throw InvalidArgument("the Inception Score needs class probabilities [N, K]");
  if (splits < 1 || splits > probs.size(0)) throw InvalidArgument("IS splits must be in 1..N");
  auto p = probs.to(at::kDouble);
  const int64_t n = p.size(0);
  std::vector<double> scores;
  for (int64_t k = 0; k < splits; ++k) {
    auto part = p.slice(0, k * n / splits, (k + 1) * n / splits);
    auto py = part.mean(0, true);
    // KL(p(y|x) || p(y)) with 0 log 0 = 0.
    auto kl = at::where(part > 0, part * (part.log() - py.log()), at::zeros_like(part)).sum(1);
    scores.push_back(std::exp(kl.mean().item<double>()));
  }
  double mean = 0, var = 0;
  for (double s : scores) mean += s / splits;
  for (double s : scores) var += (s - mean) * (s - mean) / splits;
  return {mean, std::sqrt(var)};
}

void save_feature_stats(const std::string& path, const FeatureStats& s) {
  SafeTensors st;
  st.tensors = {{"mean", s.mean.to(at::kDouble).contiguous()}, {"cov", s.cov.to(at::kDouble).contiguous()}};
  st.metadata["count"] = std::to_string(s.count);
  st.metadata["description"] = s.description;
  st.metadata["format"] = "ddpm feature statistics";
  save_safetensors(path, st);
}

FeatureStats load_feature_stats(const std::string& path) {
  auto st = load_safetensors(path);
  if (!st.contains("mean") || !st.contains("cov"))
    throw FormatError("'" + path + "' holds no feature statistics (tensors 'mean' and 'cov')");
  FeatureStats s;
  s.mean = st.at("mean").to(at::kDouble);
  s.cov = st.at("cov").to(at::kDouble);
  if (s.mean.dim() != 1 || s.cov.dim() != 2 || s.cov.size(0) != s.mean.size(0) || s.cov.size(1) != s.mean.size(0))
    throw FormatError("'" + path + "' has statistics of inconsistent shapes");
  auto it = st.metadata.find("count");
  s.count = it == st.metadata.end() ? 0 : std::stoll(it->second);
  auto d = st.metadata.find("description");
  if (d != st.metadata.end()) s.description = d->second;
  return s;
}

}  // namespace ddpm
