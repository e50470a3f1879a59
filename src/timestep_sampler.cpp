#include "ddpm/timestep_sampler.h"

#include <cmath>

#include "ddpm/errors.h"

namespace ddpm {

TimestepDraw TimestepSampler::sample(int64_t batch, at::Generator gen) const {
  const auto w = weights();
  double sum = 0.0;
  for (double x : w) sum += x;
  std::vector<double> p(w.size());
  for (size_t i = 0; i < w.size(); ++i) p[i] = w[i] / sum;
  auto probs = at::tensor(at::ArrayRef<double>(p), at::TensorOptions().dtype(at::kDouble));
  TimestepDraw out;
  out.t = at::multinomial(probs, batch, /*replacement=*/true, gen);
  out.weights = (1.0 / (static_cast<double>(T_) * probs.index_select(0, out.t))).to(at::kFloat);
  return out;
}

LossSecondMomentResampler::LossSecondMomentResampler(int64_t T, int64_t history, double uniform_prob)
    : TimestepSampler(T), history_(history), uniform_prob_(uniform_prob), losses_(T), counts_(T, 0) {
  if (history < 1) throw InvalidArgument("the loss history must hold at least one entry");
}

bool LossSecondMomentResampler::warmed_up() const {
  for (auto c : counts_)
    if (c < history_) return false;
  return true;
}

std::vector<double> LossSecondMomentResampler::weights() const {
  if (!warmed_up()) return std::vector<double>(T_, 1.0);
  std::vector<double> w(T_);
  double sum = 0.0;
  for (int64_t t = 0; t < T_; ++t) {
    double m2 = 0.0;
    for (double l : losses_[t]) m2 += l * l;
    w[t] = std::sqrt(m2 / static_cast<double>(losses_[t].size()));
    sum += w[t];
  }
  for (auto& x : w) x = x / sum * (1.0 - uniform_prob_) + uniform_prob_ / static_cast<double>(T_);
  return w;
}

void LossSecondMomentResampler::update(const at::Tensor& t, const at::Tensor& losses) {
  auto tc = t.to(at::kCPU).to(at::kLong).contiguous();
  auto lc = losses.detach().to(at::kCPU).to(at::kDouble).contiguous();
  const int64_t* tp = tc.data_ptr<int64_t>();
  const double* lp = lc.data_ptr<double>();
  for (int64_t i = 0; i < tc.numel(); ++i) {
    auto& h = losses_.at(tp[i]);
    if (static_cast<int64_t>(h.size()) == history_) h.erase(h.begin());
    h.push_back(lp[i]);
    counts_[tp[i]] += 1;
  }
}

at::Tensor LossSecondMomentResampler::state() const {
  auto s = at::full({T_, history_ + 1}, std::nan(""), at::TensorOptions().dtype(at::kDouble));
  auto a = s.accessor<double, 2>();
  for (int64_t t = 0; t < T_; ++t) {
    for (size_t k = 0; k < losses_[t].size(); ++k) a[t][k] = losses_[t][k];
    a[t][history_] = static_cast<double>(counts_[t]);
  }
  return s;
}

void LossSecondMomentResampler::load_state(const at::Tensor& state) {
  if (state.dim() != 2 || state.size(0) != T_ || state.size(1) != history_ + 1)
    throw FormatError("timestep sampler state has the wrong shape");
  auto s = state.to(at::kDouble).contiguous();
  auto a = s.accessor<double, 2>();
  for (int64_t t = 0; t < T_; ++t) {
    losses_[t].clear();
    for (int64_t k = 0; k < history_; ++k)
      if (!std::isnan(a[t][k])) losses_[t].push_back(a[t][k]);
    counts_[t] = static_cast<int64_t>(a[t][history_]);
  }
}

void check_timestep_sampler_name(const std::string& name) {
  if (name != "uniform" && name != "loss-second-moment" && name != "importance")
    throw InvalidArgument("unknown timestep sampler '" + name + "' (choose uniform or loss-second-moment)");
}

std::unique_ptr<TimestepSampler> make_timestep_sampler(const std::string& name, int64_t T) {
  check_timestep_sampler_name(name);
  if (name == "uniform") return std::make_unique<UniformSampler>(T);
  return std::make_unique<LossSecondMomentResampler>(T);
}

}  // namespace ddpm
