#include "ddpm/store/checkpoint.h"

#include <c10/core/GradMode.h>

#include "ddpm/errors.h"
#include "ddpm/io/safetensors.h"

namespace ddpm {
namespace {

const char* kFormat = "ddpm.checkpoint.v1";

nlohmann::json parse_meta(const std::map<std::string, std::string>& m, const std::string& path) {
  auto it = m.find("format");
  if (it == m.end() || it->second != kFormat)
    throw FormatError("'" + path + "' is not a ddpm checkpoint (no '" + kFormat + "' format tag)");
  nlohmann::json meta = nlohmann::json::object();
  for (const auto& [k, v] : m) {
    try {
      meta[k] = nlohmann::json::parse(v);
    } catch (const nlohmann::json::exception&) {
      meta[k] = v;
    }
  }
  for (const char* key : {"network", "diffusion", "step"})
    if (!meta.contains(key)) throw FormatError("'" + path + "' lacks the '" + key + "' metadata");
  return meta;
}

}  // namespace

const at::Tensor& TrainState::at(const std::string& name) const {
  for (const auto& kv : tensors)
    if (kv.first == name) return kv.second;
  throw FormatError("the checkpoint lacks tensor '" + name + "'");
}

DiffusionConfig diffusion_from_meta(const nlohmann::json& meta, const std::string& path) {
  try {
    return meta.at("diffusion").get<DiffusionConfig>();
  } catch (const Error& e) {
    throw FormatError("'" + path + "' has bad diffusion settings: " + e.what());
  } catch (const nlohmann::json::exception& e) {
    throw FormatError("'" + path + "' has bad diffusion settings: " + e.what());
  }
}

void save_checkpoint(const std::string& path, const TrainState& state, const nlohmann::json& extra) {
  SafeTensors st;
  st.tensors = state.tensors;
  st.metadata["format"] = kFormat;
  for (auto it = state.meta.begin(); it != state.meta.end(); ++it) st.metadata[it.key()] = it.value().dump();
  for (auto it = extra.begin(); it != extra.end(); ++it)
    st.metadata[it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
  save_safetensors(path, st);
}

TrainState load_train_state(const std::string& path) {
  auto st = load_safetensors(path);
  TrainState out;
  out.meta = parse_meta(st.metadata, path);
  out.tensors = std::move(st.tensors);
  return out;
}

void save_model_only(const std::string& checkpoint_path, const std::string& out_path, bool raw) {
  auto st = load_safetensors(checkpoint_path);
  parse_meta(st.metadata, checkpoint_path);
  SafeTensors out;
  out.metadata = st.metadata;
  out.metadata["contents"] = raw ? "raw-only" : "ema-only";
  const std::string prefix = raw ? "model." : "ema.";
  for (const auto& [name, t] : st.tensors)
    if (name.rfind(prefix, 0) == 0) out.tensors.emplace_back("ema." + name.substr(prefix.size()), t);
  if (out.tensors.empty())
    throw FormatError("'" + checkpoint_path + "' holds no " + (raw ? "raw" : "EMA") + " weights" +
                      (raw ? " (a shipped model keeps only its EMA weights)" : ""));
  save_safetensors(out_path, out);
}

LoadedModel load_model(const std::string& path, bool ema) {
  auto st = load_safetensors(path);
  LoadedModel m;
  m.meta = parse_meta(st.metadata, path);
  m.diffusion = diffusion_from_meta(m.meta, path);
  m.network = make_network(m.meta.at("network"));
  const std::string prefix = ema ? "ema." : "model.";
  at::NoGradGuard g;
  for (auto& kv : m.network->named_parameters()) {
    const std::string key = prefix + kv.key();
    if (!st.contains(key)) throw FormatError("'" + path + "' lacks weights '" + key + "'");
    const auto& src = st.at(key);
    if (!src.sizes().equals(kv.value().sizes()))
      throw FormatError("'" + path + "': weights '" + key + "' have the wrong shape");
    kv.value().copy_(src);
  }
  m.network->eval();
  return m;
}

}  // namespace ddpm
