// A time-conditioned residual MLP denoiser for low-dimensional data (the 2-D toy sets, point clouds from .npy).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include "ddpm/models/network.h"

namespace ddpm {

struct MLPOptions {
  int64_t dim = 2;           ///< data dimension D
  int64_t hidden = 256;      ///< width of the residual stream
  int64_t blocks = 3;        ///< residual blocks
  int64_t time_dim = 128;    ///< sinusoidal embedding size
  int64_t num_classes = 0;   ///< > 0: class-conditional, with one extra null label for guidance
  int64_t out_factor = 1;    ///< 2 when the variance is learned
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(MLPOptions, dim, hidden, blocks, time_dim, num_classes, out_factor)

/// x → Linear → [h += W2 SiLU(W1 SiLU(h) + Wt temb)] × blocks → SiLU → Linear → output (zero-initialised, so a
/// fresh model predicts 0, as the DDPM U-Net's last layer).
class MLPDenoiser : public Network {
 public:
  explicit MLPDenoiser(MLPOptions options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) override;
  nlohmann::json config() const override;
  int64_t num_classes() const override { return options_.num_classes; }
  std::vector<int64_t> item_shape() const override { return {options_.dim}; }
  int64_t output_factor() const override { return options_.out_factor; }
  const MLPOptions& options() const { return options_; }

 private:
  MLPOptions options_;
  torch::nn::Linear time_fc1{nullptr}, time_fc2{nullptr}, in_proj{nullptr}, out_proj{nullptr};
  torch::nn::Embedding class_emb{nullptr};
  torch::nn::ModuleList fc1, fc2, temb_proj;
};

}  // namespace ddpm
