// Adam (Kingma & Ba 2015) with the bias correction of torch.optim.Adam, kept here so that its state is plain
// named tensors (exact resumption) and identical under every LibTorch version.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace ddpm {

class Adam {
 public:
  Adam(std::vector<at::Tensor> params, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8);
  /// One update with learning rate lr from the parameters' current .grad() (parameters without one are skipped).
  void step(double lr);
  int64_t steps() const { return t_; }
  std::vector<at::Tensor>& exp_avg() { return m_; }
  std::vector<at::Tensor>& exp_avg_sq() { return v_; }
  void set_steps(int64_t t) { t_ = t; }

 private:
  std::vector<at::Tensor> params_, m_, v_;
  double beta1_, beta2_, eps_;
  int64_t t_ = 0;
};

}  // namespace ddpm
