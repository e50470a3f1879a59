// Noise-aware classifiers p_φ(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, §4): for images the
// downsampling half of the DDPM U-Net (ResNet blocks that add the timestep embedding, optional attention), a
// GroupNorm-SiLU-average-pool head and a dense layer to the logits; for points a residual MLP that adds the
// timestep embedding in every block. Both take the *original* timesteps, as the denoisers do.
#pragma once

#include <torch/nn/module.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ddpm/guidance.h"

namespace ddpm {

struct NoisyClassifierOptions {
  std::string arch = "unet";  ///< "unet" (images [B, C, H, W]) or "mlp" (points [B, D])
  int64_t num_classes = 10;
  // arch "unet"
  int64_t in_channels = 1, image_size = 32;
  int64_t base_channels = 32;                  ///< channels of the first level
  std::vector<int64_t> channel_mult = {1, 2, 2};
  int64_t num_res_blocks = 1;                  ///< ResNet blocks per level
  std::vector<int64_t> attention_resolutions;  ///< sides at which a self-attention block follows each ResNet block
  int64_t groups = 8;                          ///< GroupNorm groups
  double dropout = 0.0;
  // arch "mlp"
  int64_t dim = 2, hidden = 128, blocks = 2, time_dim = 64;
  /// Every field by name, and "type": "noisy_classifier".
  nlohmann::json to_json() const;
  /// Throws FormatError for a JSON that is not a noisy classifier's.
  static NoisyClassifierOptions from_json(const nlohmann::json& j);
  /// The shape of one input item: {C, S, S} or {D}.
  std::vector<int64_t> item_shape() const;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(NoisyClassifierOptions, arch, num_classes, in_channels, image_size,
                                                base_channels, channel_mult, num_res_blocks, attention_resolutions,
                                                groups, dropout, dim, hidden, blocks, time_dim)

class NoisyClassifierNet : public torch::nn::Module {
 public:
  /// Logits [B, K] of x_t (images in [-1, 1] scale or points) at original timesteps t [B] (int64).
  virtual at::Tensor forward(const at::Tensor& x, const at::Tensor& t) = 0;
  const NoisyClassifierOptions& options() const { return options_; }

 protected:
  explicit NoisyClassifierNet(NoisyClassifierOptions o) : options_(std::move(o)) {}
  NoisyClassifierOptions options_;
};

/// The network of `options.arch`; throws InvalidArgument for invalid options (naming the field).
std::shared_ptr<NoisyClassifierNet> make_noisy_classifier(const NoisyClassifierOptions& options);

/// The network as a NoisyClassifier for guidance: eval mode, inputs cast to float32 (gradients flow back to x's
/// dtype), logits as float32.
NoisyClassifier as_noisy_classifier(std::shared_ptr<NoisyClassifierNet> net);

}  // namespace ddpm
