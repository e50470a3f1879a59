#include "ddpm/models/classifier.h"

#include <c10/core/InferenceMode.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/pooling.h>

#include <cmath>

#include "ddpm/compat.h"
#include "ddpm/errors.h"
#include "ddpm/io/safetensors.h"

namespace ddpm {

nlohmann::json ClassifierOptions::to_json() const {
  return {{"type", "classifier"}, {"in_channels", in_channels}, {"image_size", image_size},
          {"num_classes", num_classes}, {"width", width}, {"feature_dim", feature_dim}, {"dropout", dropout}};
}

ClassifierOptions ClassifierOptions::from_json(const nlohmann::json& j) {
  ClassifierOptions o;
  o.in_channels = j.value("in_channels", o.in_channels);
  o.image_size = j.value("image_size", o.image_size);
  o.num_classes = j.value("num_classes", o.num_classes);
  o.width = j.value("width", o.width);
  o.feature_dim = j.value("feature_dim", o.feature_dim);
  o.dropout = j.value("dropout", o.dropout);
  return o;
}

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

void save_classifier(const std::string& path, Classifier& net, const nlohmann::json& extra_meta) {
  SafeTensors st;
  for (const auto& kv : net.named_parameters(true)) st.tensors.push_back({kv.key(), kv.value().detach().contiguous()});
  for (const auto& kv : net.named_buffers(true)) st.tensors.push_back({kv.key(), kv.value().detach().contiguous()});
  st.metadata["network"] = net.options().to_json().dump();
  for (const auto& [k, v] : extra_meta.items()) st.metadata[k] = v.is_string() ? v.get<std::string>() : v.dump();
  save_safetensors(path, st);
}

std::shared_ptr<Classifier> load_classifier(const std::string& path, nlohmann::json* meta) {
  auto st = load_safetensors(path);
  auto it = st.metadata.find("network");
  nlohmann::json cfg;
  try {
    if (it != st.metadata.end()) cfg = nlohmann::json::parse(it->second);
  } catch (const std::exception&) {
  }
  if (cfg.value("type", std::string()) != "classifier")
    throw FormatError("'" + path + "' is not a ddpm classifier (train one with `ddpm classifier train`)");
  auto net = std::make_shared<Classifier>(ClassifierOptions::from_json(cfg));
  torch::NoGradGuard g;
  for (auto& kv : net->named_parameters(true)) kv.value().copy_(st.at(kv.key()));
  for (auto& kv : net->named_buffers(true)) kv.value().copy_(st.at(kv.key()));
  net->eval();
  if (meta) {
    *meta = nlohmann::json::object();
    for (const auto& [k, v] : st.metadata) {
      try {
        (*meta)[k] = nlohmann::json::parse(v);
      } catch (const std::exception&) {
        (*meta)[k] = v;
      }
    }
  }
  return net;
}

}  // namespace ddpm
