// A small image classifier for evaluation (issue 5): its softmax gives p(y|x) for the Inception Score and its
// penultimate layer the features for FID, on 28/32-pixel data sets where Inception-v3 is a poor fit.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace ddpm {

struct ClassifierOptions {
  int64_t in_channels = 1;
  int64_t image_size = 32;
  int64_t num_classes = 10;
  int64_t width = 32;         ///< channels of the first stage; doubled at each of the next two
  int64_t feature_dim = 256;  ///< the penultimate layer: FID features
  double dropout = 0.3;
  /// Every field by name, and "type": "classifier".
  nlohmann::json to_json() const;
  static ClassifierOptions from_json(const nlohmann::json& j);
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(ClassifierOptions, in_channels, image_size, num_classes, width,
                                                feature_dim, dropout)

/// [conv-BN-ReLU ×2, max-pool] at widths w, 2w; conv-BN-ReLU at 4w; global average pool; a dense ReLU layer of
/// feature_dim (the features); dropout; a dense layer to the logits.
class Classifier : public torch::nn::Module {
 public:
  explicit Classifier(ClassifierOptions o);
  /// Logits [B, K] of images [B, C, H, W] in [-1, 1].
  at::Tensor forward(const at::Tensor& x);
  /// The penultimate activations [B, feature_dim].
  at::Tensor features(const at::Tensor& x);
  const ClassifierOptions& options() const { return options_; }

 private:
  ClassifierOptions options_;
  torch::nn::ModuleList convs{nullptr}, norms{nullptr};
  torch::nn::Linear fc{nullptr}, out{nullptr};
};

/// Accuracy of the classifier (eval mode) on labelled images, in batches.
double classifier_accuracy(Classifier& net, const at::Tensor& x, const at::Tensor& y, int64_t batch = 500);

/// Runs `fn` (logits or features) over x in batches, in eval mode, without gradients.
at::Tensor classifier_apply(Classifier& net, const at::Tensor& x, bool features, int64_t batch = 500);


}  // namespace ddpm
