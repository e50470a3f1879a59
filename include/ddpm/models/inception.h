// Inception-v3 as FID papers use it (pytorch-fid's "FID Inception", after TensorFlow's 2015 graph): torchvision's
// architecture with 1008 logits, average pools in blocks A, C and E_1 that do not count the padding, and a max
// pool in the last block's pool branch. Images are resized to 299×299 (bilinear) first. No weights ship with ddpm:
// the user supplies them as safetensors with torchvision's parameter names (scripts/convert_inception.py).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <memory>
#include <string>

namespace ddpm {

/// Convolution without bias, batch norm (ε = 0.001), ReLU: torchvision's BasicConv2d ("conv", "bn").
class BasicConvImpl : public torch::nn::Module {
 public:
  BasicConvImpl(int64_t in, int64_t out, int64_t kh, int64_t kw, int64_t stride = 1, int64_t ph = 0, int64_t pw = 0);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(BasicConv);

class FidInceptionV3 : public torch::nn::Module {
 public:
  FidInceptionV3();
  /// Images [B, 1 or 3, H, W] in [-1, 1] → 2048-d pool features (grey images are repeated to three channels).
  at::Tensor features(const at::Tensor& x);
  /// The 1008 logits of the features (IS uses their softmax).
  at::Tensor logits(const at::Tensor& features);

 private:
  std::shared_ptr<torch::nn::Module> stem_, mixed_[11];
  torch::nn::Linear fc{nullptr};
};

/// Loads weights from a safetensors file with torchvision's names (Conv2d_1a_3x3.conv.weight, …, fc.bias);
/// throws IoError / FormatError naming the first missing or mis-shaped tensor.
std::shared_ptr<FidInceptionV3> load_fid_inception(const std::string& path);

}  // namespace ddpm
