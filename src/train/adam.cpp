#include "ddpm/train/adam.h"

#include <c10/core/GradMode.h>

#include <cmath>

namespace ddpm {

Adam::Adam(std::vector<at::Tensor> params, double beta1, double beta2, double eps)
    : params_(std::move(params)), beta1_(beta1), beta2_(beta2), eps_(eps) {
  for (const auto& p : params_) {
    m_.push_back(at::zeros_like(p));
    v_.push_back(at::zeros_like(p));
  }
}

void Adam::step(double lr) {
  at::NoGradGuard no_grad;
  ++t_;
  const double bc1 = 1.0 - std::pow(beta1_, static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(beta2_, static_cast<double>(t_));
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& g = params_[i].grad();
    if (!g.defined()) continue;
    m_[i].mul_(beta1_).add_(g, 1.0 - beta1_);
    v_[i].mul_(beta2_).addcmul_(g, g, 1.0 - beta2_);
    auto denom = (v_[i].sqrt() / std::sqrt(bc2)).add_(eps_);
    params_[i].addcdiv_(m_[i], denom, -lr / bc1);
  }
}

}  // namespace ddpm
