#include "ddpm/store/classifier.h"

#include <c10/core/GradMode.h>

#include "ddpm/errors.h"
#include "ddpm/io/safetensors.h"

namespace ddpm {

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
