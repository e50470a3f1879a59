#include "ddpm/models/network.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>

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

PrecisionTiming choose_compute_precision(Network& net, int64_t batch, int repeats) {
  if (batch < 1 || repeats < 1) throw InvalidArgument("choose_compute_precision: batch and repeats must be positive");
  PrecisionTiming out;
  out.batch = batch;
  std::vector<int64_t> shape = {batch};
  for (auto d : net.item_shape()) shape.push_back(d);
  auto params = net.parameters();
  auto opts = at::TensorOptions().device(params.empty() ? at::Device(at::kCPU) : params.front().device());
  at::NoGradGuard no_grad;
  const bool training = net.is_training();
  net.eval();  // no dropout: the measurement draws nothing from the default generator
  auto gen = at::detail::createCPUGenerator(0);
  auto x = at::randn(shape, gen).to(opts.device());
  auto t = at::full({batch}, 500, opts.dtype(at::kLong));
  auto time = [&](ComputePrecision p) {
    net.set_compute_precision(p);
    if (net.compute_precision() != p) return std::nan("");
    net.forward(x, t, at::Tensor());  // warm-up (and the weight cache)
    double best = 1e300;
    for (int i = 0; i < repeats; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      auto y = net.forward(x, t, at::Tensor());
      y.sum().item<double>();  // waits for asynchronous devices
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  out.fp32_seconds = time(ComputePrecision::fp32);
  out.bf16_seconds = time(ComputePrecision::bf16);
  out.chosen = out.bf16_seconds < out.fp32_seconds ? ComputePrecision::bf16 : ComputePrecision::fp32;
  net.set_compute_precision(out.chosen);
  net.train(training);
  return out;
}

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
