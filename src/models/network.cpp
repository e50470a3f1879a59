#include "ddpm/models/network.h"

#include "ddpm/errors.h"
#include "ddpm/models/mlp.h"
#include "ddpm/models/unet.h"

namespace ddpm {

int64_t Network::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

AttentionPrecision parse_attention_precision(const std::string& name) { return parse_name<AttentionPrecision>(name); }

std::shared_ptr<Network> make_network(const nlohmann::json& c) {
  try {
    const std::string type = c.at("type").get<std::string>();
    if (type == "mlp") return std::make_shared<MLPDenoiser>(c.get<MLPOptions>());
    if (type == "unet") return std::make_shared<UNet>(UNetOptions::from_json(c));
    throw InvalidArgument("unknown network type '" + type + "'");
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(std::string("bad network configuration: ") + e.what());
  }
}

nlohmann::json normalized_network_config(const nlohmann::json& c) {
  try {
    const std::string type = c.at("type").get<std::string>();
    nlohmann::json j;
    if (type == "mlp") j = c.get<MLPOptions>();
    else if (type == "unet") j = UNetOptions::from_json(c);
    else throw InvalidArgument("unknown network type '" + type + "'");
    j["type"] = type;
    return j;
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(std::string("bad network configuration: ") + e.what());
  }
}

Denoiser as_denoiser(std::shared_ptr<Network> net) {
  return [net = std::move(net)](const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) {
    return net->forward(x, t, y);
  };
}

}  // namespace ddpm
