#include "ddpm/models/classifier.h"

#include <c10/core/InferenceMode.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/pooling.h>

#include <cmath>

#include "ddpm/compat.h"
#include "ddpm/errors.h"

namespace ddpm {

nlohmann::json ClassifierOptions::to_json() const {
  nlohmann::json j = *this;
  j["type"] = "classifier";
  return j;
}

ClassifierOptions ClassifierOptions::from_json(const nlohmann::json& j) { return j.get<ClassifierOptions>(); }

Classifier::Classifier(ClassifierOptions o) : options_(o) {
  if (o.in_channels < 1 || o.num_classes < 2 || o.width < 1 || o.feature_dim < 1 || !(o.dropout >= 0 && o.dropout < 1))
    throw InvalidArgument("invalid classifier options");
  const int64_t w = o.width;
  const std::vector<std::pair<int64_t, int64_t>> layers = {{o.in_channels, w}, {w, w}, {w, 2 * w}, {2 * w, 2 * w},
                                                           {2 * w, 4 * w}};
  convs = register_module("convs", torch::nn::ModuleList());
  norms = register_module("norms", torch::nn::ModuleList());
  for (const auto& [i, c] : layers) {
    convs->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(i, c, 3).padding(1).bias(false)));
    norms->push_back(torch::nn::BatchNorm2d(c));
  }
  fc = register_module("fc", torch::nn::Linear(4 * w, o.feature_dim));
  out = register_module("out", torch::nn::Linear(o.feature_dim, o.num_classes));
}

at::Tensor Classifier::features(const at::Tensor& x) {
  namespace F = torch::nn::functional;
  if (x.dim() != 4 || x.size(1) != options_.in_channels)
    throw InvalidArgument("the classifier expects images [B, " + std::to_string(options_.in_channels) + ", H, W], got " +
                          std::string(c10::str(x.sizes())));
  auto h = x;
  for (size_t i = 0; i < convs->size(); ++i) {
    h = convs[i]->as<torch::nn::Conv2d>()->forward(h);
    h = at::relu(norms[i]->as<torch::nn::BatchNorm2d>()->forward(h));
    if (i == 1 || i == 3) h = at::max_pool2d(h, {2, 2});
  }
  h = h.mean({2, 3});
  return at::relu(fc(h));
}

at::Tensor Classifier::forward(const at::Tensor& x) {
  auto f = features(x);
  if (is_training() && options_.dropout > 0) f = at::dropout(f, options_.dropout, true);
  return out(f);
}

at::Tensor classifier_apply(Classifier& net, const at::Tensor& x, bool features, int64_t batch) {
  net.eval();
  c10::InferenceMode guard;
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < x.size(0); i += batch) {
    auto xb = x.slice(0, i, std::min(x.size(0), i + batch)).to(at::kFloat);
    parts.push_back(features ? net.features(xb) : net.forward(xb));
  }
  return at::cat(parts);
}

double classifier_accuracy(Classifier& net, const at::Tensor& x, const at::Tensor& y, int64_t batch) {
  auto pred = classifier_apply(net, x, false, batch).argmax(1);
  return (pred == y.to(at::kLong)).to(at::kDouble).mean().item<double>();
}

}  // namespace ddpm
