#include "ddpm/store/classifier.h"

#include <c10/core/GradMode.h>

#include "ddpm/errors.h"
#include "ddpm/io/safetensors.h"

namespace ddpm {

namespace {

nlohmann::json parsed_metadata(const SafeTensors& st) {
  auto meta = nlohmann::json::object();
  for (const auto& [k, v] : st.metadata) {
    try {
      meta[k] = nlohmann::json::parse(v);
    } catch (const std::exception&) {
      meta[k] = v;
    }
  }
  return meta;
}

void copy_weights(torch::nn::Module& net, const SafeTensors& st, const std::string& path) {
  torch::NoGradGuard g;
  auto fill = [&](const std::string& name, at::Tensor dst) {
    if (!st.contains(name)) throw FormatError("'" + path + "' lacks the tensor '" + name + "'");
    const at::Tensor* src = &st.at(name);
    if (src->sizes() != dst.sizes())
      throw FormatError("'" + path + "': tensor '" + name + "' is " + std::string(c10::str(src->sizes())) +
                        ", the network needs " + std::string(c10::str(dst.sizes())));
    dst.copy_(*src);
  };
  for (auto& kv : net.named_parameters(true)) fill(kv.key(), kv.value());
  for (auto& kv : net.named_buffers(true)) fill(kv.key(), kv.value());
}

SafeTensors weights_of(torch::nn::Module& net) {
  SafeTensors st;
  for (const auto& kv : net.named_parameters(true)) st.tensors.push_back({kv.key(), kv.value().detach().contiguous()});
  for (const auto& kv : net.named_buffers(true)) st.tensors.push_back({kv.key(), kv.value().detach().contiguous()});
  return st;
}

}  // namespace

void save_classifier(const std::string& path, Classifier& net, const nlohmann::json& extra_meta) {
  auto st = weights_of(net);
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
  copy_weights(*net, st, path);
  net->eval();
  if (meta) *meta = parsed_metadata(st);
  return net;
}

void save_noisy_classifier(const std::string& path, NoisyClassifierNet& net, const DiffusionConfig& diffusion,
                           const nlohmann::json& extra_meta) {
  auto st = weights_of(net);
  for (const auto& [k, v] : extra_meta.items()) st.metadata[k] = v.is_string() ? v.get<std::string>() : v.dump();
  st.metadata["network"] = net.options().to_json().dump();
  st.metadata["diffusion"] = nlohmann::json(diffusion).dump();
  save_safetensors(path, st);
}

LoadedNoisyClassifier load_noisy_classifier(const std::string& path) {
  auto st = load_safetensors(path);
  LoadedNoisyClassifier out;
  out.meta = parsed_metadata(st);
  const auto& cfg = out.meta.contains("network") ? out.meta["network"] : nlohmann::json();
  if (!cfg.is_object() || cfg.value("type", std::string()) != "noisy_classifier")
    throw FormatError("'" + path + "' is not a noise-aware classifier (train one with `ddpm classifier train --noisy`)");
  if (!out.meta.contains("diffusion") || !out.meta["diffusion"].is_object())
    throw FormatError("'" + path + "' does not record the diffusion settings it was trained under");
  try {
    out.diffusion = out.meta["diffusion"].get<DiffusionConfig>();
  } catch (const std::exception& e) {
    throw FormatError("'" + path + "': its diffusion settings do not parse: " + e.what());
  }
  try {
    out.net = make_noisy_classifier(NoisyClassifierOptions::from_json(cfg));
  } catch (const InvalidArgument& e) {
    throw FormatError("'" + path + "': " + e.what());
  }
  copy_weights(*out.net, st, path);
  out.net->eval();
  return out;
}

}  // namespace ddpm
